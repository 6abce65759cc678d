"""The training loop on tiny random data: config, reproducibility, callbacks, checkpoints, prediction."""
import json

import numpy as np
import pytest
import torch

from hamfast.patterns import all_patterns
from hamfast.training import TrainConfig, TrainResult, load_checkpoint, predict_proba, save_checkpoint, train
from hamfast.training.losses import class_weights

TINY = dict(widths=(4, 8, 8, 8), batch_size=4, augment=False)


@pytest.fixture(scope="module")
def data():
    """12 samples 96x96: 4 complete, the rest with missing modalities holding NaN (must never be shown)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 4, 96, 96, generator=gen)
    available = torch.ones(12, 4, dtype=torch.bool)
    available[4:8, 0] = False
    available[8:, 1:] = False
    images[~available] = float("nan")
    labels = torch.arange(12) % 3
    return images, available, labels


def test_config_round_trip_and_validation():
    config = TrainConfig("ham", schedule="mixed", iterations=7, widths=[8, 16, 16, 32], seed=3)
    assert config.widths == (8, 16, 16, 32)
    data = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**data, "epochs": 3})
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig("moddrop")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig("ham", schedule="random")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig("ham", batch_size=0)


def test_class_weights_are_inverse_frequency():
    # N = 6, n = (3, 1, 2): w_c = N / (3 * n_c) = (2/3, 2, 1); an absent class gets 0
    torch.testing.assert_close(class_weights(torch.tensor([0, 0, 0, 1, 2, 2]), 3), torch.tensor([2 / 3, 2.0, 1.0]))
    torch.testing.assert_close(class_weights(torch.tensor([0, 2]), 3), torch.tensor([2 / 3, 0.0, 2 / 3]))


@pytest.mark.parametrize(
    "method,schedule", [("standard", "paper"), ("dropout", "paper"), ("featimpute", "paper"), ("ham", "paper"), ("ham", "mixed")]
)
def test_same_seed_same_history_and_absent_channels_never_shown(data, method, schedule):
    config = TrainConfig(method, schedule=schedule, iterations=5, seed=1, **TINY)
    first = train(config, *data)
    second = train(config, *data)
    assert len(first.history["loss"]) == 5 and first.history["iterations"] == 5
    assert np.isfinite(first.history["loss"]).all()  # NaN channels of absent modalities never reached the loss
    assert first.history["loss"] == second.history["loss"]
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    other = train(TrainConfig(method, schedule=schedule, iterations=5, seed=2, **TINY), *data)
    assert other.history["loss"] != first.history["loss"]
    assert not first.model.training


def test_standard_needs_complete_samples(data):
    images, available, labels = data
    with pytest.raises(ValueError, match="no training sample has all modalities"):
        train(TrainConfig("standard", iterations=1, **TINY), images[4:], available[4:], labels[4:])


def test_callback_every_n_steps_can_stop(data):
    calls = []

    def callback(iteration, model):
        calls.append((iteration, model.training))
        model.eval()  # e.g. a validation pass; training must resume in train mode
        return iteration >= 4

    result = train(TrainConfig("ham", iterations=10, **TINY), *data, callback=callback, eval_every=2)
    assert calls == [(2, True), (4, True)]
    assert result.history["iterations"] == 4 and len(result.history["loss"]) == 4
    assert result.history["stopped_early"]
    with pytest.raises(ValueError, match="eval_every"):
        train(TrainConfig("ham", iterations=2, **TINY), *data, callback=callback)


def test_ham_checkpoint_serves_all_patterns(data, tmp_path):
    images, available, labels = data
    result = train(TrainConfig("ham", schedule="mixed", iterations=6, **TINY), images, available, labels)
    path = tmp_path / "sub" / "ham.pt"
    save_checkpoint(path, result)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, TrainResult) and loaded.config == result.config
    assert loaded.history["loss"] == result.history["loss"]
    test_images = torch.rand(15, 4, 96, 96, generator=torch.Generator().manual_seed(5))
    patterns = all_patterns()
    torch.testing.assert_close(
        predict_proba(loaded.model, test_images, patterns), predict_proba(result.model, test_images, patterns)
    )
    tracked = loaded.model.norms[0].num_batches_tracked  # the per-pattern statistics came along
    assert torch.equal(tracked, result.model.norms[0].num_batches_tracked) and tracked.sum() >= 6


def test_format_1_ham_checkpoint_loads_with_its_hypernetwork_outputs_placed(data, tmp_path):
    """hamfast <= 0.1 wrote HAM's hypernetwork outputs in PyTorch's parameter order, P of them (format
    1); format 2 places them for the kernels (P' >= P outputs). A format-1 file (made here from a
    format-2 one) loads to the same model."""
    from hamfast.models.ham import output_placement

    result = train(TrainConfig("ham", schedule="mixed", iterations=2, **TINY), *data)
    save_checkpoint(tmp_path / "new.pt", result)
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    assert payload["format"] == "hamfast.checkpoint/2"
    placement, width = output_placement(result.model.layout)
    assert payload["state_dict"]["hypernet.out.bias"].shape == (width,) and width >= placement.numel()
    for key in ("hypernet.out.weight", "hypernet.out.bias"):
        payload["state_dict"][key] = payload["state_dict"][key][placement]
    torch.save(dict(payload, format="hamfast.checkpoint/1"), tmp_path / "old.pt")
    mu = all_patterns()
    with torch.no_grad():
        want = result.model.generate(mu)
        got = load_checkpoint(tmp_path / "old.pt").model.generate(mu)
    assert all(torch.equal(got[name], want[name]) for name in want)
    # Format 1 rows read as format 2 do not fit (P rows where P' are expected): refused by name.
    torch.save(payload, tmp_path / "mislabelled.pt")
    if width != placement.numel():
        with pytest.raises(ValueError, match="hypernet.out"):
            load_checkpoint(tmp_path / "mislabelled.pt")


def test_checkpoint_of_a_bare_model_needs_config(data, tmp_path):
    result = train(TrainConfig("dropout", iterations=1, **TINY), *data)
    with pytest.raises(ValueError, match="config"):
        save_checkpoint(tmp_path / "m.pt", result.model)
    save_checkpoint(tmp_path / "m.pt", result.model, result.config, {"note": [1]})
    assert load_checkpoint(tmp_path / "m.pt").history == {"note": [1]}
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a hamfast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_predict_proba_batches_and_restores_mode(data):
    images, available, _ = data
    images = torch.nan_to_num(images).numpy()
    model = train(TrainConfig("ham", iterations=2, **TINY), *data).model.train()
    probs = predict_proba(model, images, available.numpy(), batch_size=5)
    assert probs.shape == (12, 3) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(12))
    torch.testing.assert_close(probs, predict_proba(model, images, available, batch_size=64))
    assert model.training


def test_progress_bar_shows_the_method_and_loss(data, capsys):
    train(TrainConfig("dropout", iterations=2, **TINY), *data, progress=True)
    err = capsys.readouterr().err
    assert "dropout" in err and "2/2" in err and "loss=" in err


def test_ham_recalibration_changes_only_the_running_statistics(data):
    on = train(TrainConfig("ham", iterations=4, **TINY), *data)
    off = train(TrainConfig("ham", iterations=4, recalibrate=False, **TINY), *data)
    assert on.history["loss"] == off.history["loss"]
    for (name, a), b in zip(on.model.named_parameters(), off.model.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(on.model.norms[0].running_mean, off.model.norms[0].running_mean)
