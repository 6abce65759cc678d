"""Non-finite is an error everywhere in training (issue 18): the data, every step's loss and
gradients in both training loops, the weights written and read, the probabilities predicted, the
sizes a checkpoint asks for; a diverged experiment task is a failure, never a score."""
import json
import math
import re

import numpy as np
import pytest
import torch

from hamfast import checks, cli
from hamfast.data.cohort import Cohort
from hamfast.training import TrainConfig, load_checkpoint, predict_proba, save_checkpoint, train
from hamfast.training import trainer as trainer_module
from hamfast.training.batched import train_batched
from hamfast.training.checkpoints import CheckpointError
from hamfast.training.divergence import DivergenceError, checked_losses, gradients_finite
from hamfast.training.trainer import build_from_config

TINY = dict(widths=(4, 8, 8, 8), batch_size=4, augment=False)


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 4, 96, 96, generator=gen)
    available = torch.ones(12, 4, dtype=torch.bool)
    available[8:, 1:] = False
    labels = torch.arange(12) % 3
    return images, available, labels


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# --- the training loops -----------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [math.inf, math.nan, -1.0])
def test_config_refuses_a_learning_rate_that_is_not_finite_and_positive(lr):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        TrainConfig("ham", lr=lr)


def test_nan_in_a_present_modality_is_refused_before_the_first_step(data, monkeypatch):
    images, available, labels = data
    images = images.clone()
    images[5, 2, 40, 40] = float("nan")  # one NaN pixel
    images[9, 3] = float("inf")  # absent modality: never shown, allowed
    monkeypatch.setattr(trainer_module, "_step_loss", lambda *a: pytest.fail("a step ran"))
    with pytest.raises(ValueError, match=r"sample 5 \(of 12\), modality t2, 1 sample\(s\).*a NaN in the data"):
        train(TrainConfig("dropout", iterations=3, **TINY), images, available, labels)


@pytest.mark.parametrize("method, lr", [("standard", 1e12), ("ham", 1e30)])
def test_huge_learning_rate_stops_at_the_first_non_finite_step(method, lr, data):
    config = TrainConfig(method, iterations=60, lr=lr, seed=0, **TINY)
    with pytest.raises(DivergenceError) as info:
        train(config, *data)
    message = str(info.value)
    assert "\n" not in message and f"training diverged at step {info.value.step}:" in message
    assert 1 <= info.value.step < 60 and f"the learning rate {lr:g} is too high" in message


def _nan_after(step: int):
    """A `_step_loss` that returns NaN from the given step on (counted per call)."""
    original, calls = trainer_module._step_loss, []

    def step_loss(*args):
        calls.append(1)
        loss = original(*args)
        return loss * float("nan") if len(calls) >= step else loss

    return step_loss


def test_non_finite_loss_names_the_step(data, monkeypatch):
    monkeypatch.setattr(trainer_module, "_step_loss", _nan_after(4))
    with pytest.raises(DivergenceError, match=r"training diverged at step 4: the loss is nan; likely cause: the learning"):
        train(TrainConfig("standard", iterations=10, **TINY), *data)


def test_non_finite_gradient_with_a_finite_loss_is_caught(data, monkeypatch):
    original = trainer_module.build_from_config

    def build(config):
        model = original(config)
        next(model.parameters()).register_hook(lambda grad: grad * float("inf"))
        return model

    monkeypatch.setattr(trainer_module, "build_from_config", build)
    with pytest.raises(DivergenceError, match=r"at step 1: a gradient is NaN or Inf"):
        train(TrainConfig("standard", iterations=5, **TINY), *data)


def test_nan_made_by_the_augmentation_is_named_as_the_input(data, monkeypatch):
    class Poison:
        def __init__(self, seed):
            pass

        def __call__(self, sample, mu):
            return sample * float("nan")

    monkeypatch.setattr("hamfast.data.ModalityAugment", Poison)
    with pytest.raises(DivergenceError, match="likely cause: a NaN or Inf in the step's input batch"):
        train(TrainConfig("standard", iterations=3, widths=(4, 8, 8, 8), batch_size=4, augment=True), *data)


def test_weights_that_end_non_finite_are_refused(data, monkeypatch):
    def poison(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    monkeypatch.setattr(trainer_module, "recalibrate_pattern_norms", poison)
    with pytest.raises(DivergenceError, match="weight tensor"):
        train(TrainConfig("ham", iterations=2, **TINY), *data)


def test_batched_training_stops_and_names_the_model(data):
    configs = [TrainConfig("standard", iterations=60, seed=s, lr=1e12, **TINY) for s in range(2)]
    with pytest.raises(DivergenceError) as info:
        train_batched(configs, [data, data])
    assert info.value.model in (0, 1) and f"model {info.value.model}: the loss is" in str(info.value)
    assert "training diverged at step" in str(info.value)


def test_checked_losses_fetches_once_and_passes_finite_steps():
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    ok = gradients_finite(model.parameters())
    assert ok.dim() == 0 and bool(ok)
    assert checked_losses(torch.tensor([0.5, 0.25]), ok, 3, 1e-4) == [0.5, 0.25]
    model.weight.grad[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="at step 3: a gradient is NaN or Inf"):
        checked_losses(torch.tensor([0.5]), gradients_finite(model.parameters()), 3, 1e-4)


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture
def ham_checkpoint(tmp_path):
    path = tmp_path / "ham.pt"
    config = TrainConfig("ham", widths=(2, 2, 2, 2))
    save_checkpoint(path, build_from_config(config), config=config,
                    history={"data": {"reader_settings": {"size": 96}, "test_ids": []}})
    return path


def test_save_refuses_and_load_refuses_non_finite_weights(ham_checkpoint, tmp_path):
    config = TrainConfig("ham", widths=(2, 2, 2, 2))
    model = build_from_config(config)
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(CheckpointError, match="not written: 1 weight tensor"):
        save_checkpoint(tmp_path / "nan.pt", model, config=config)
    assert not (tmp_path / "nan.pt").exists()
    payload = torch.load(ham_checkpoint, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] * float("nan")
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited.pt holds NaN or Inf weights .*diverged"):
        load_checkpoint(tmp_path / "edited.pt")


@pytest.mark.parametrize("field, value, message", [
    ("kernel_size", 10001, r"kernel_size must lie in \[1, 31\]"),
    ("widths", [2, 2, 2, 100000], r"widths must lie in \[1, 8192\]"),
    ("hidden", 10**7, r"hidden must lie in \[1, 1024\]"),
    ("kernel_size", 7, r"do not fit its config .*kernel size 7.* where the config gives"),
])
def test_checkpoint_sizes_are_range_checked_before_allocation(field, value, message, ham_checkpoint, tmp_path,
                                                             monkeypatch):
    payload = torch.load(ham_checkpoint, weights_only=True)
    payload["config"][field] = value
    torch.save(payload, tmp_path / "edited.pt")
    real_build = trainer_module.build_from_config

    def build(config):  # the real model is built only once its shapes match the weights
        assert str(torch.empty(0).device) == "meta", "a model was allocated before the checks"
        return real_build(config)

    monkeypatch.setattr("hamfast.training.checkpoints.build_from_config", build)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "edited.pt")


@pytest.mark.parametrize("size, message", [
    (20000, r"slice size 20000 is out of range: it must be an integer in \[91, 4096\]"),
    ("96", r"slice size '96' is out of range"),
    (40, r"slice size 40 is out of range"),
])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_cli_refuses_a_checkpoint_slice_size_before_reading(command, size, message, ham_checkpoint, tmp_path, capsys,
                                                          monkeypatch):
    payload = torch.load(ham_checkpoint, weights_only=True)
    payload["history"]["data"]["reader_settings"]["size"] = size
    torch.save(payload, tmp_path / "edited.pt")
    monkeypatch.setattr(cli, "load_cohort", lambda *a, **k: pytest.fail("read before the check"))
    (tmp_path / "case").mkdir()
    argv = [command, str(tmp_path / "edited.pt")] + (["--data", str(tmp_path)] if command == "evaluate"
                                                    else [str(tmp_path / "case")])
    assert cli.main(argv + ["--device", "cpu", "-q"]) == 2
    err = _error(capsys)
    assert err.startswith(f"hamfast {command}: error: checkpoint ") and re.search(message, err), err


def test_checkpoint_slice_size_memory_estimate(monkeypatch):
    monkeypatch.setattr(checks, "available_memory", lambda device="cpu": 2**30)
    with pytest.raises(ValueError, match=r"checkpoint x: predicting at its slice size 4096 px needs about"):
        checks.check_checkpoint_size(4096, (64, 128, 256, 512), 5, "ham", 64, "checkpoint x")
    checks.check_checkpoint_size(96, (64, 128, 256, 512), 5, "ham", 1, "checkpoint x")


def test_predict_proba_never_returns_nan(data):
    model = build_from_config(TrainConfig("standard", **TINY)).eval()
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan")) if hasattr(model, "classifier") else \
            list(model.parameters())[-2].fill_(float("nan"))
    with pytest.raises(DivergenceError, match="NaN or Inf probabilities for 12 of 12 sample"):
        predict_proba(model, data[0], data[1])
