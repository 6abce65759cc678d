"""Issue 11's options: Dropout's masking distribution, HAM's shared batch norm, the baselines'
recalibration, the truncated first conv, Table 2's marks, the paper preset's fixed split and sizes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hamfast.experiments.config import PRESETS, make_settings
from hamfast.experiments.report import cv_cap_hits, table2_marks
from hamfast.models import CBRTiny, FeatImpute, HAM
from hamfast.patterns import all_patterns, is_subpattern, pattern_code
from hamfast.training import TrainConfig, calibration_set, predict_proba, train
from hamfast.training.recalibrate import recalibrate_pattern_norms, recalibrated_copy
from hamfast.training.sampling import PerSampleSampler, channel_dropout, make_sampler

WIDTHS = (4, 4, 4, 4)


# --- Dropout's masking distribution -----------------------------------------------------------


def test_channel_dropout_drops_each_modality_with_probability_p():
    gen = torch.Generator().manual_seed(0)
    available = torch.ones(20000, 4, dtype=torch.bool)
    mu = channel_dropout(available, 0.25, gen)
    assert mu.any(1).all()
    # P(kept) = 0.75 / (1 - 0.25**4) per modality, given a non-empty result
    assert abs(mu.float().mean().item() - 0.75 / (1 - 0.25**4)) < 0.01
    complete = mu.all(1).float().mean().item()
    assert abs(complete - 0.75**4 / (1 - 0.25**4)) < 0.015  # about 32 % of steps see the complete input
    partial = torch.tensor([[1, 0, 1, 0]] * 5000 + [[0, 0, 0, 1]] * 10, dtype=torch.bool)
    mu = channel_dropout(partial, 0.5, gen)
    assert is_subpattern(mu, partial).all() and mu.any(1).all()
    assert (pattern_code(mu[5000:]) == 8).all()  # a single modality is never dropped


def test_per_sample_sampler_modes_and_keep():
    available = torch.tensor([[1, 1, 1, 1]] * 40 + [[1, 0, 1, 0]] * 40, dtype=torch.bool)
    gen = torch.Generator().manual_seed(1)
    subset = PerSampleSampler(available, 80, gen, mode="subset")
    keep_all = PerSampleSampler(available, 80, gen, mode="channel", p=0.5, keep=1.0)
    channel = PerSampleSampler(available, 80, gen, mode="channel", p=0.25)
    complete_share = {}
    for name, sampler in (("subset", subset), ("channel", channel)):
        hits = []
        for _ in range(50):
            index, mu = sampler()
            assert is_subpattern(mu, available[index]).all() and mu.any(1).all()
            hits.append(mu[index < 40].all(1).float().mean().item())
        complete_share[name] = np.mean(hits)
    assert abs(complete_share["subset"] - 1 / 15) < 0.03 and abs(complete_share["channel"] - 0.317) < 0.05
    index, mu = keep_all()
    assert torch.equal(mu, available[index])  # keep = 1: every sample keeps its own pattern
    with pytest.raises(ValueError, match="dropout mode"):
        PerSampleSampler(available, 4, gen, mode="bernoulli")
    with pytest.raises(ValueError, match=r"dropout p .* \[0, 1\)"):
        PerSampleSampler(available, 4, gen, mode="channel", p=1.0)
    with pytest.raises(ValueError, match="dropout keep"):
        PerSampleSampler(available, 4, gen, keep=1.5)


def test_make_sampler_passes_the_dropout_options_and_train_config_checks_them():
    gen = torch.Generator().manual_seed(0)
    sampler = make_sampler("dropout", "paper", torch.ones(4, 4, dtype=torch.bool), 2, 10, gen,
                           dropout_mode="channel", dropout_p=0.1, dropout_keep=0.3)
    assert (sampler.mode, sampler.p, sampler.keep) == ("channel", 0.1, 0.3)
    # One masking distribution: HAM's mixed schedule takes Dropout's options.
    ham = make_sampler("ham", "mixed", torch.ones(4, 4, dtype=torch.bool), 2, 10, gen,
                       dropout_mode="channel", dropout_p=0.1, dropout_keep=0.3)
    assert (ham.mode, ham.p, ham.keep) == ("channel", 0.1, 0.3)
    config = TrainConfig("dropout")
    assert (config.dropout_mode, config.dropout_p, config.dropout_keep) == ("channel", 0.5, 0.0)
    for bad in (dict(dropout_mode="x"), dict(dropout_p=-0.1), dict(dropout_keep=2.0), dict(ham_norm="none")):
        with pytest.raises(ValueError):
            TrainConfig("dropout", **bad)
    assert TrainConfig.from_dict(TrainConfig("ham", ham_norm="shared").to_dict()).ham_norm == "shared"


# --- HAM's batch norm: per pattern or shared ---------------------------------------------------


def _batch(n=12, size=91, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, size, size, generator=gen)
    patterns = all_patterns()
    available = patterns[torch.arange(n) % 3 * 5]  # three patterns, mixed
    return x, available


def test_shared_norm_uses_whole_batch_statistics_and_one_slot():
    torch.manual_seed(0)
    x, available = _batch()
    shared = HAM(widths=WIDTHS, norm="shared", backend="reference")
    per_pattern = HAM(widths=WIDTHS, backend="reference")
    per_pattern.load_state_dict(shared.state_dict())
    shared.train(), per_pattern.train()
    a, b = shared(x, available), per_pattern(x, available)
    assert not torch.allclose(a, b)  # mixed batch: whole-batch vs per-group statistics
    one = available[:1].expand(4, -1)  # a batch of a single pattern: the same in both modes
    assert torch.allclose(shared(x[:4], one), per_pattern(x[:4], one), atol=1e-5)
    norm = shared.norms[0]
    assert norm.num_batches_tracked[0] == 2 and norm.num_batches_tracked[1:].sum() == 0
    shared.eval()
    for code in (1, 6, 11):  # eval: every pattern's task model uses slot 0
        mu = all_patterns()[code - 1]
        model = shared.task_model(mu)
        assert torch.equal(model.trunk.blocks[0][1].running_mean, norm.running_mean[0])
        xs = x[:3]
        assert torch.allclose(model(xs * mu[None, :, None, None]), shared(xs, mu.expand(3, -1)), atol=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        HAM(widths=WIDTHS, norm="instance")


def test_recalibration_of_a_shared_norm_averages_every_supported_pattern():
    torch.manual_seed(0)
    model = HAM(widths=WIDTHS, norm="shared", backend="reference")
    x, _ = _batch(n=8)
    available = torch.tensor([[1, 1, 0, 0]] * 8, dtype=torch.bool)  # supports t1, t1ce, t1+t1ce
    codes = recalibrate_pattern_norms(model, x, available, batch_size=8)
    assert sorted(codes) == [1, 2, 3]
    norm = model.norms[0]
    assert int(norm.num_batches_tracked[0]) == 3  # one batch per pattern, averaged into slot 0
    expected = []
    model.train()
    with torch.no_grad():
        for code in (1, 2, 3):
            mu = all_patterns()[code - 1]
            params = model.generate(mu[None])
            h = F.conv2d(x * mu[None, :, None, None], params["trunk.blocks.0.0.weight"][0], params["trunk.blocks.0.0.bias"][0])
            expected.append(h.mean((0, 2, 3)))
    assert torch.allclose(norm.running_mean[0], torch.stack(expected).mean(0), atol=1e-5)


# --- the baselines' recalibration -----------------------------------------------------------------


@pytest.mark.parametrize("model_cls", [CBRTiny, FeatImpute])
def test_recalibrated_copy_has_the_test_patterns_statistics(model_cls):
    torch.manual_seed(0)
    model = model_cls(4, 3, WIDTHS, 5)
    x, _ = _batch(n=10)
    available = torch.tensor([[1, 1, 1, 1]] * 6 + [[1, 0, 1, 0]] * 4, dtype=torch.bool)
    mu = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = recalibrated_copy(model, x, available, mu, batch_size=64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert not copy.training
    # the statistics of the 6 samples that have t1 and t1ce, shown with t1+t1ce only
    reference = model_cls(4, 3, WIDTHS, 5)
    reference.load_state_dict(before)
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats(), setattr(m, "momentum", None)
    reference.train()
    with torch.no_grad():
        reference(x[:6], mu.expand(6, -1))
    for (name, a), b in zip(copy.state_dict().items(), reference.state_dict().values()):
        if "running" in name:
            assert torch.allclose(a, b, atol=1e-5), name
    flair = torch.tensor([0, 0, 0, 1], dtype=torch.bool)
    assert recalibrated_copy(model, x[6:], available[6:], flair) is model  # no t1+t2 sample has flair: kept as is


def test_predict_proba_recalibrates_baselines_per_test_pattern():
    torch.manual_seed(0)
    model = CBRTiny(4, 3, WIDTHS, 5).eval()
    x, _ = _batch(n=10)
    available = torch.ones(10, 4, dtype=torch.bool)
    test_mask = torch.tensor([[1, 1, 1, 1]] * 3 + [[1, 0, 1, 0]] * 3, dtype=torch.bool)
    probs = predict_proba(model, x[:6], test_mask, calibration=(x, available))
    for rows, mu in ((slice(0, 3), test_mask[0]), (slice(3, 6), test_mask[3])):
        expected = predict_proba(recalibrated_copy(model, x, available, mu), x[rows], test_mask[rows])
        assert torch.allclose(probs[rows], expected, atol=1e-6)
    assert not torch.allclose(probs, predict_proba(model, x[:6], test_mask))


def test_calibration_set_per_method():
    x = np.zeros((5, 4, 91, 91), dtype=np.float32)
    available = np.array([[1, 1, 1, 1]] * 2 + [[1, 0, 1, 0]] * 3, dtype=bool)
    on = dict(recalibrate_baselines=True)
    assert calibration_set(TrainConfig("ham", **on), x, available) is None
    assert calibration_set(TrainConfig("dropout"), x, available) is None  # off by default, as in the paper
    assert calibration_set(TrainConfig("standard", **on), x, available)[0].shape[0] == 2  # its complete samples
    images, mask = calibration_set(TrainConfig("featimpute", **on), x, available)
    assert images.shape[0] == 5 and torch.equal(mask, torch.as_tensor(available))


def test_train_with_shared_norm_and_without_recalibration_runs():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((12, 4, 91, 91)).astype(np.float32)
    available = np.ones((12, 4), dtype=bool)
    labels = np.arange(12) % 3
    result = train(TrainConfig("ham", iterations=2, batch_size=4, widths=WIDTHS, ham_norm="shared", recalibrate=False,
                               augment=False), x, available, labels)
    assert result.model.norm == "shared" and int(result.model.norms[0].num_batches_tracked[0]) == 2


# --- the truncated first conv (paper) == zeroed absent channels (hamfast) --------------------------


def test_zeroed_absent_channels_equal_the_truncated_first_conv():
    """The paper's task model has a first conv over the present channels only; hamfast keeps all four
    input channels and zeroes the absent ones. Zero inputs contribute nothing whatever their weights,
    so HAM's generated CBRTiny equals, for every pattern, a CBRTiny whose first conv keeps only the
    present channels' weights, in eval and in train mode."""
    torch.manual_seed(0)
    ham = HAM(widths=WIDTHS, backend="reference")
    with torch.no_grad():  # make the absent channels' weights large, so a leak would show
        ham.hypernet.out.bias.add_(torch.randn_like(ham.hypernet.out.bias))
    x = torch.randn(5, 4, 91, 91)
    for train_mode in (False, True):
        ham.train(train_mode)
        for mu in all_patterns():
            full = ham.task_model(mu)
            present = mu.nonzero()[:, 0]
            truncated = CBRTiny(int(present.numel()), 3, WIDTHS, 5).train(train_mode)
            state = full.state_dict()
            state["trunk.blocks.0.0.weight"] = state["trunk.blocks.0.0.weight"][:, present]
            truncated.load_state_dict(state)
            with torch.no_grad():
                expected = truncated(x[:, present])
                got = ham(x, mu.expand(5, -1))
            # Float noise scales with the outputs (thousands here): the tolerance is relative to them.
            scale = float(expected.abs().max())
            assert torch.allclose(got, expected, atol=1e-5 * scale), (train_mode, mu.tolist(), scale)


# --- Table 2's marks -------------------------------------------------------------------------------


def test_table2_marks_are_computed_per_baseline():
    ham = [0.6, 0.62, 0.61, 0.63, 0.64, 0.65, 0.6, 0.66]
    low = [v - 0.2 for v in ham]
    high = [v + 0.2 for v in ham]
    # better than Dropout only
    assert table2_marks({"dropout": low, "featimpute": high, "ham": ham})["ham"] == "*"
    # better than FeatImpute only
    assert table2_marks({"dropout": high, "featimpute": low, "ham": ham})["ham"] == "⊗"
    marks = table2_marks({"dropout": low, "featimpute": low, "ham": ham})
    assert marks["ham"] == "*⊗" and marks["dropout"] == "" and marks["featimpute"] == ""
    assert table2_marks({"dropout": ham, "featimpute": low})["dropout"] == "⊗"  # a baseline beats the other
    assert table2_marks({"featimpute": low, "ham": ham}) == {"featimpute": "", "ham": "⊗"}  # no Dropout: no `*`


def test_cv_cap_hits():
    results = [
        {"method": "ham", "cv": {"iterations": 300, "eval_iterations": [100, 200, 300]}},
        {"method": "ham", "cv": {"iterations": 200, "eval_iterations": [100, 200, 300]}},
        {"method": "dropout", "cv": {"iterations": 300, "eval_iterations": [100, 200, 300]}},
        {"method": "dropout", "cv": None},
    ]
    assert cv_cap_hits(results) == (2, 3)


# --- the paper preset ---------------------------------------------------------------------------


def test_paper_preset_is_the_protocol():
    paper = make_settings("a", "paper")
    assert paper.split == "fixed" and paper.stop == "cv" and paper.cv_folds == 5 and paper.size == 128
    assert paper.widths == (64, 128, 256, 512) and paper.schedule == "paper" and paper.runs == 30
    assert make_settings("a", "quick").split == "per-run"
    for preset in PRESETS.values():
        assert preset["ham_norm"] == "per-pattern" and preset["recalibrate"] is True
    from hamfast.checks import check_network_fits

    with pytest.raises(ValueError, match="71x71 px slices are too small.*at least 91x91.*--size"):
        check_network_fits(71, paper.widths, paper.kernel_size, option="--data x")
    check_network_fits(128, paper.widths, paper.kernel_size)
    with pytest.raises(ValueError, match="--size: 64x64 px slices are too small"):
        make_settings("a", "paper", size=64)
    quick = make_settings("b", "quick", ham_norm="shared", recalibrate=False, dropout_mode="subset", dropout_keep=0.5)
    options = quick.train_options()
    assert options["ham_norm"] == "shared" and options["recalibrate"] is False and options["dropout_mode"] == "subset"
    assert TrainConfig("ham", **options).dropout_keep == 0.5
    with pytest.raises(ValueError, match="ham_norm"):
        make_settings("a", "quick", ham_norm="batch")


def test_fixed_split_is_the_same_across_runs():
    """run_task with split="fixed": every run tests on the same cases (and trains on the rest);
    split="per-run": the runs' test sets differ."""
    from hamfast.experiments.runner import Samples, Task, run_task

    gen = np.random.default_rng(0)
    n = 30
    samples = Samples(gen.random((n, 4, 91, 91), dtype=np.float32), np.ones((n, 4), dtype=bool),
                      np.arange(n) % 3, [f"case{i:02d}" for i in range(n)])
    tested = {}
    for split in ("fixed", "per-run"):
        settings = make_settings("a", "quick", runs=2, methods=("dropout",), completeness=(0.5,), split=split, test_size=6,
                                 widths=WIDTHS, iterations=1, augment=False)
        tested[split] = [run_task(Task(run, run, 0.5, "dropout"), settings, samples)["evaluations"][0]["ids"] for run in (0, 1)]
    assert tested["fixed"][0] == tested["fixed"][1] and len(tested["fixed"][0]) == 6
    assert tested["per-run"][0] != tested["per-run"][1]


def test_synth_cli_options():
    from hamfast.cli import build_parser

    args = build_parser().parse_args(["synth", "out", "--signal", "0.7", "--private", "0"])
    assert (args.signal, args.private) == (0.7, 0.0)
    defaults = build_parser().parse_args(["synth", "out"])
    from hamfast.data.synthetic import DEFAULT_PRIVATE, DEFAULT_SIGNAL

    # Unset on the command line (they are refused for --layout nnunet); the BraTS layout then uses
    # the generator's defaults, which the help states.
    assert (defaults.signal, defaults.private) == (None, None)
    synth_help = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "synth")[1]
    text = " ".join(synth_help.format_help().split())
    assert f"default {DEFAULT_SIGNAL}" in text and f"default {DEFAULT_PRIVATE}" in text
    for bad in (["--signal", "1.5"], ["--private", "-0.2"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["synth", "out", *bad])
    exp = build_parser().parse_args(["experiment", "a", "--data", "d", "--out", "o", "--ham-norm", "shared",
                                     "--recalibrate", "off", "--dropout-mode", "subset", "--dropout-keep", "0.5"])
    from hamfast.cli import _experiment_settings

    settings = _experiment_settings(exp)
    assert (settings.ham_norm, settings.recalibrate, settings.dropout_mode, settings.dropout_keep) == ("shared", False, "subset", 0.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["experiment", "a", "--data", "d", "--out", "o", "--dropout-p", "1"])
