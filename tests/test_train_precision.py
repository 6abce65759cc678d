"""Training precision (TrainConfig.precision, --precision): bf16 autocast learns like fp32; the TF32
flags are set for the run and restored; the option travels from the experiment settings and the CLI."""
import numpy as np
import pytest
import torch

from hamfast.data import make_synthetic_brats, prepare_brats
from hamfast.experiments.config import ExperimentSettings, make_settings
from hamfast.training import PRECISIONS, TrainConfig, train

WIDTHS = (4, 8, 8, 8)
STEPS = 100
WINDOW = 15  # losses averaged at the start and at the end


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    # The easy cohort of the end-to-end tests (images explain most of survival): a clear loss drop in few steps.
    root = make_synthetic_brats(tmp_path_factory.mktemp("synthetic_brats"), n_cases=60, shape=(96, 96, 8), seed=0,
                                signal=0.95, private=0.0)
    c = prepare_brats(root, size=96)
    return c.images, c.available, c.labels


def _loss_drop(config, cohort) -> tuple[float, float, list]:
    loss = train(config, *cohort).history["loss"]
    return float(np.mean(loss[:WINDOW])), float(np.mean(loss[-WINDOW:])), loss


@pytest.mark.parametrize("method", ["ham", "standard"])
def test_bf16_training_lowers_the_loss_like_fp32(cohort, method):
    common = dict(iterations=STEPS, widths=WIDTHS, lr=1e-3, augment=False, seed=0, schedule="mixed", recalibrate=False)
    start32, end32, loss32 = _loss_drop(TrainConfig(method, precision="fp32", **common), cohort)
    start16, end16, loss16 = _loss_drop(TrainConfig(method, precision="bf16", **common), cohort)
    print(f"{method}: fp32 {start32:.4f} -> {end32:.4f}, bf16 {start16:.4f} -> {end16:.4f}")
    assert np.isfinite(loss16).all()
    assert loss16 != loss32  # autocast really ran the forward in bfloat16
    assert end32 < 0.9 * start32
    assert end16 < 0.9 * start16
    # bf16 learns about as much as fp32 in the same steps
    assert (start16 - end16) > 0.5 * (start32 - end32)


def test_tf32_flags_are_set_for_the_run_and_restored(cohort, monkeypatch):
    seen = []
    images, available, labels = cohort
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def callback(iteration, model):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))

    for precision, flags in (("tf32", (True, True)), ("fp32", (False, False)), ("bf16", (False, False))):
        seen.clear()
        config = TrainConfig("standard", iterations=1, widths=(4, 4, 4, 4), augment=False, precision=precision)
        train(config, images[:16], available[:16], labels[:16], callback=callback, eval_every=1)
        assert seen == [flags], precision
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == previous


def test_precision_is_validated_and_kept():
    assert PRECISIONS == ("fp32", "tf32", "bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig("ham", precision="fp16")
    config = TrainConfig("ham", precision="bf16")
    assert TrainConfig.from_dict(config.to_dict()).precision == "bf16"
    old = config.to_dict()
    del old["precision"]  # a checkpoint written before the option
    assert TrainConfig.from_dict(old).precision == "fp32"


def test_experiment_settings_carry_precision():
    settings = make_settings("a", "quick", precision="tf32")
    assert settings.precision == "tf32" and settings.identity()["precision"] == "tf32"
    old = make_settings("a", "quick").to_dict()
    del old["precision"]  # experiment.json written before the option
    assert ExperimentSettings.from_dict(old).precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        make_settings("a", "quick", precision="half")


def test_cli_passes_precision():
    from hamfast.cli import _experiment_settings, build_parser

    args = build_parser().parse_args(["experiment", "a", "--data", "d", "--out", "o", "--precision", "bf16"])
    assert _experiment_settings(args).precision == "bf16"
    args = build_parser().parse_args(["experiment", "a", "--data", "d", "--out", "o"])
    assert _experiment_settings(args).precision == "fp32"
    args = build_parser().parse_args(["train", "--data", "d", "--method", "ham"])
    assert args.precision == "fp32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "d", "--method", "ham", "--precision", "fp16"])
