"""HAM on mixed batches (issue 17): the shared masking distribution, pattern-group batches, the
exact-pattern reading of the paper's schedule, the frozen-hypernetwork control, diagnostics and
the fair baseline defaults."""
import numpy as np
import pytest
import torch

from hamfast.experiments.config import METHOD_VARIANTS, base_method, make_settings
from hamfast.models import HAM
from hamfast.patterns import all_patterns, is_subpattern, pattern_code
from hamfast.training import TrainConfig, calibration_set, initial_model
from hamfast.training.sampling import PatternSampler, PerSampleSampler, make_sampler

WIDTHS = (4, 4, 4, 4)


def _cohort(n_complete=60, n_partial=60):
    partial = all_patterns()[torch.arange(n_partial) % 14]  # every pattern but the complete one
    return torch.cat([torch.ones(n_complete, 4, dtype=torch.bool), partial])


def _complete_share(sampler) -> float:
    """The share of all views (sample x step) shown complete, over many steps."""
    views = torch.cat([sampler()[1] for _ in range(600)])
    return views.all(1).double().mean().item()


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_ham_mixed_and_dropout_show_complete_inputs_equally_often(p):
    """One masking distribution: the patterns HAM-mixed trains on are distributed as Dropout's
    (a group's pattern is the masking draw for a random anchor sample), so the share of complete
    views is the same."""
    available = _cohort()  # half complete
    config = dict(dropout_mode="channel", dropout_p=p)
    dropout = make_sampler("dropout", "paper", available, 16, 10, torch.Generator().manual_seed(0), **config)
    ham = make_sampler("ham", "mixed", available, 16, 10, torch.Generator().manual_seed(0), **config)
    expected = 0.5 * (1 - p) ** 4 / (1 - p**4)  # independent drops, conditioned on keeping one
    shares = _complete_share(dropout), _complete_share(ham)
    assert abs(shares[0] - expected) < 0.015 and abs(shares[1] - expected) < 0.025, (shares, expected)


def test_channel_masking_at_half_is_uniform_over_the_patterns():
    available = torch.ones(30000, 4, dtype=torch.bool)
    sampler = PerSampleSampler(available, 30000, torch.Generator().manual_seed(3), mode="channel", p=0.5)
    _, mu = sampler()
    counts = torch.bincount(pattern_code(mu), minlength=16)[1:].double()
    assert counts.min() > 0 and (counts / counts.mean() - 1).abs().max() < 0.08  # 15 equal shares


def test_mixed_batches_are_pattern_groups_of_equal_size():
    available = _cohort()
    sampler = make_sampler("ham", "mixed", available, 16, 10, torch.Generator().manual_seed(1), mixed_groups=4)
    for _ in range(50):
        index, mu = sampler()
        assert index.numel() == 16
        assert is_subpattern(mu, available[index]).all()
        codes = pattern_code(mu).view(4, 4)
        assert (codes == codes[:, :1]).all()  # four blocks of four, one pattern each
        assert index.view(4, 4).unique(dim=1).shape[1] == 4  # no sample twice in a group
        # Groups that drew the same pattern merge in HAM: every pattern group has a multiple of 4.
        assert (torch.bincount(pattern_code(mu)) % 4 == 0).all()
    free = make_sampler("ham", "mixed", available, 16, 10, torch.Generator().manual_seed(1), mixed_groups=0)
    sizes = torch.cat([torch.bincount(pattern_code(free()[1]))[1:] for _ in range(50)])
    assert (sizes == 1).any()  # a pattern per sample leaves groups of one: what the groups avoid
    assert make_sampler("ham", "mixed", available, 2, 10, torch.Generator(), mixed_groups=4).groups == 2
    with pytest.raises(ValueError, match="groups"):
        PerSampleSampler(available, 16, torch.Generator(), groups=-1)


def test_a_groups_training_output_does_not_depend_on_the_other_groups():
    """Per-pattern batch norm: a sample's training-mode output depends on its own pattern group
    only (its size is fixed by the sampler), not on how many samples the other patterns have."""
    torch.manual_seed(0)
    model = HAM(widths=WIDTHS, kernel_size=3, backend="reference").train()
    x = torch.randn(16, 4, 61, 61)
    a, b, c = (all_patterns()[code - 1] for code in (15, 5, 9))
    mine = x[:4]
    first = model(torch.cat([mine, x[4:8]]), torch.stack([a] * 4 + [b] * 4))[:4]
    second = model(torch.cat([mine, x[4:16]]), torch.stack([a] * 4 + [c] * 12))[:4]
    assert torch.allclose(first, second, atol=1e-5)
    alone = model(torch.cat([mine[:1], x[4:8]]), torch.stack([a] + [b] * 4))[:1]
    assert not torch.allclose(alone, first[:1], atol=1e-3)  # the group itself is what normalises


def test_exact_reading_trains_each_pattern_on_its_own_cases_only():
    available = _cohort(40, 28)
    exact = PatternSampler(available, 8, torch.Generator().manual_seed(0), n_it=1, exact=True)
    masked = PatternSampler(available, 8, torch.Generator().manual_seed(0), n_it=1)
    assert set(pattern_code(exact.patterns).tolist()) == set(pattern_code(available).unique().tolist())
    for _ in range(60):
        index, mu = exact()
        assert torch.equal(available[index], mu)  # own pattern == shown pattern
    assert any(not torch.equal(available[i], m) for i, m in (masked() for _ in range(60)))
    complete = torch.ones(10, 4, dtype=torch.bool)  # 100 % completeness: only the complete pattern
    assert pattern_code(PatternSampler(complete, 4, torch.Generator(), exact=True).patterns).tolist() == [15]
    assert make_sampler("ham", "paper-exact", available, 8, 10, torch.Generator()).exact


def test_frozen_control_shares_one_task_model_and_stays_frozen():
    torch.manual_seed(0)
    model = HAM(widths=WIDTHS, kernel_size=3, frozen=True, backend="reference")
    params = model.generate(all_patterns().float())
    for value in params.values():
        assert torch.equal(value, value[:1].expand_as(value))
    assert model.diagnostics()["distinct_models"] == 1
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    x, available = torch.randn(8, 4, 61, 61), all_patterns()[torch.arange(8) % 15]
    model(x, available).sum().backward()
    optimizer.step()
    assert model.hypernet.out.weight.abs().max() == 0 and model.hypernet.out.weight.grad is None
    assert TrainConfig("ham", ham_frozen=True).ham_frozen
    with pytest.raises(ValueError, match="ham_frozen"):
        TrainConfig("dropout", ham_frozen=True)


def test_diagnostics_count_alive_units_and_distinct_models():
    torch.manual_seed(0)
    model = HAM(widths=WIDTHS)
    found = model.diagnostics()
    assert found["patterns"] == 15 and len(found["alive_units"]) == 3 and found["hidden"] == 4
    with torch.no_grad():
        model.hypernet.body[-2].bias.fill_(-1e3)  # the last hidden layer dead for every pattern
    dead = model.diagnostics()
    assert dead["alive_units"][-1] == 0 and dead["distinct_models"] == 1
    with torch.no_grad():
        model.hypernet.body[-2].bias.fill_(1e3)  # alive for all: patterns differ through the layers below
    assert model.diagnostics()["alive_units"][-1] == 4
    # initial_model rebuilds a run's starting point exactly.
    config = TrainConfig("ham", widths=WIDTHS, seed=7)
    first, second = initial_model(config), initial_model(config)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_baselines_keep_their_statistics_by_default():
    images, available = torch.randn(6, 4, 8, 8), torch.ones(6, 4, dtype=torch.bool)
    assert calibration_set(TrainConfig("dropout"), images, available) is None
    calibrated = calibration_set(TrainConfig("dropout", recalibrate_baselines=True), images, available)
    assert calibrated is not None and calibrated[0].shape[0] == 6


def test_experiment_variants_fix_their_train_options():
    settings = make_settings("a", "quick", methods=["standard", "ham", *METHOD_VARIANTS], schedule="paper")
    assert settings.train_options("ham")["schedule"] == "paper"
    assert settings.train_options("ham-mixed")["schedule"] == "mixed"
    assert settings.train_options("ham-exact")["schedule"] == "paper-exact"
    assert settings.train_options("ham-frozen")["ham_frozen"] is True
    assert [base_method(m) for m in ("standard", "ham-paper")] == ["standard", "ham"]
    quick = make_settings("a", "quick")
    assert (quick.dropout_p, quick.mixed_groups, quick.recalibrate_baselines) == (0.5, 4, False)
    with pytest.raises(ValueError, match="method must be one of"):
        make_settings("a", "quick", methods=["ham-bogus"])
    assert np.isclose(TrainConfig("dropout").dropout_p, quick.dropout_p)
