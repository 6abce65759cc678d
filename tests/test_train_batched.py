"""Batched training (hamfast.training.batched, hamfast.models.stacked) equals one-by-one training.

Two levels:

* the stacked models in float64: forward, loss gradients and batch-norm statistics of R stacked
  models equal those of the R ordinary models, for every method and both conv backends (tight);
* the training loop: ``train_batched`` gives every model the loss history and the parameters that
  ``train`` gives it alone, with different seeds, data, lengths, batch sizes and callbacks; run in
  float64 (both loops patched the same way) and compared tightly, and in float32 on the losses.

Why float64 for the tight loop check: a conv bias right before batch norm has a gradient that is
zero up to rounding (the norm removes it), and Adam turns that rounding noise into steps of +-lr;
FeatImpute's shared-encoder gradient is ill-conditioned (in float32, BatchNorm2d and the per-group
norm differ by 1 % there). In float32 the two loops therefore agree on the losses (FeatImpute's
to 1e-2) but single parameters may differ by a few lr; in float64 everything agrees to 1e-7.
"""
import copy

import numpy as np
import pytest
import torch

from hamfast.models import build_model
from hamfast.models.stacked import stack_models
from hamfast.training import TrainConfig, train
from hamfast.training.batched import batching_problem, train_batched

WIDTHS = (3, 4, 4, 4)
SMALL = dict(widths=WIDTHS, kernel_size=3)  # 80 px inputs end in 2x2 (at 1x1, batch norm is degenerate)
METHODS = [("standard", "paper"), ("dropout", "paper"), ("featimpute", "paper"), ("ham", "paper"), ("ham", "mixed")]


def _data(n: int, seed: int, size: int = 80):
    """n samples: a third complete, the others missing t1 or all but t1; absent channels hold NaN."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 4, size, size, generator=gen)
    available = torch.ones(n, 4, dtype=torch.bool)
    available[n // 3 : 2 * n // 3, 0] = False
    available[2 * n // 3 :, 1:] = False
    images[~available] = float("nan")
    labels = torch.arange(n) % 3
    return images, available, labels


def _forward_loss(model, x, available):
    """Model output and auxiliary loss of an ordinary model, as the training loop computes them."""
    if hasattr(model, "auxiliary_loss"):
        features = model.encode(x, available)
        return model.classify(features), model.auxiliary_loss(features)
    return model(x, available), None


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("method", ["standard", "featimpute", "ham"])
def test_stacked_models_equal_the_models_in_float64(method, backend):
    torch.manual_seed(0)
    extra = {"featimpute_shared": "per-modality"} if method == "featimpute" else {}
    models = [build_model(method, **SMALL, **extra).double().train() for _ in range(3)]
    stacked = stack_models(copy.deepcopy(models), backend).double().train()
    x = torch.rand(10, 4, 80, 80, dtype=torch.float64)
    available = torch.ones(10, 4, dtype=torch.bool)
    available[::3, 0] = False
    available[1::4, 2:] = False
    owner = torch.tensor([2, 0, 0, 1, 2, 0, 1, 1, 2, 2])  # any order; model 1's batch mixes patterns
    logits, aux = stacked(x, available, owner)
    total = 0
    for r, model in enumerate(models):
        rows = (owner == r).nonzero()[:, 0]
        want, want_aux = _forward_loss(model, x[rows], available[rows])
        torch.testing.assert_close(logits[rows], want, rtol=1e-10, atol=1e-10)
        got_loss = logits[rows].square().mean() + (aux[r] if aux is not None else 0)
        (want.square().mean() + (want_aux if want_aux is not None else 0)).backward()
        total = total + got_loss
    total.backward()
    # One SGD step of lr 1 applies each gradient; the stacked slices must land where the models do.
    torch.optim.SGD(stacked.parameters(), lr=1.0).step()
    for r, model in enumerate(models):
        torch.optim.SGD(model.parameters(), lr=1.0).step()
        got = stacked.copy_to(r, copy.deepcopy(model)).state_dict()
        for name, want in model.state_dict().items():
            # running statistics: PatternBatchNorm forms its momentum and N/(N-1) factors in float32
            tol = 1e-7 if "running" in name else 1e-9
            torch.testing.assert_close(got[name].double(), want.double(), rtol=tol, atol=tol, msg=name)


@pytest.fixture
def float64_training(monkeypatch):
    """Run ``train`` and ``train_batched`` in float64 (the same code path; float32 only in the casts)."""
    import hamfast.training.batched as batched
    import hamfast.training.trainer as trainer

    as_inputs, build, batch = trainer._as_inputs, trainer.build_from_config, trainer._batch

    def as_inputs64(*args, **kwargs):
        out = as_inputs(*args, **kwargs)
        return (out[0].double(),) + tuple(out[1:])

    def batch64(*args):  # the augmentation returns float32
        x, mu = batch(*args)
        return x.double(), mu

    for module in (trainer, batched):
        monkeypatch.setattr(module, "_as_inputs", as_inputs64)
        monkeypatch.setattr(module, "_batch", batch64)
    monkeypatch.setattr(trainer, "build_from_config", lambda config: build(config).double())  # both start runs here


def _assert_same_models(a, b, tol):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, want in state_a.items():
        got = state_b[name]
        assert got.dtype == want.dtype, name
        torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")


def _three_runs(method, schedule, **overrides):
    """Three configs, each with its own seed, data, batch size and length (it leaves the batch when done)."""
    configs = [
        TrainConfig(method, schedule=schedule, iterations=3 + r, seed=10 + r, **SMALL, batch_size=5 + r,
                    augment=False, n_it=2, recalibrate=False,
                    **({"featimpute_shared": "per-modality"} if method == "featimpute" else {}), **overrides)
        for r in range(3)
    ]
    return configs, [_data(14 + r, seed=r) for r in range(3)]


@pytest.mark.parametrize("method,schedule", METHODS)
def test_batched_training_equals_training_one_by_one(method, schedule, float64_training):
    configs, data = _three_runs(method, schedule)
    alone = [train(config, *entry) for config, entry in zip(configs, data)]
    together = train_batched(configs, data)
    for config, a, b in zip(configs, alone, together):
        assert b.history["iterations"] == a.history["iterations"] == config.iterations
        assert b.history["class_weights"] == a.history["class_weights"]
        assert not b.model.training
        np.testing.assert_allclose(b.history["loss"], a.history["loss"], rtol=1e-9, atol=1e-12)
        # Adam turns rounding noise in a zero gradient (a conv bias before batch norm) into steps
        # of +-lr (1e-4); in float64 the noise stays far below that, so everything is compared tightly.
        _assert_same_models(a.model, b.model, tol=1e-7)
        assert len(set(b.history["loss"])) > 1  # the models really trained


@pytest.mark.parametrize("method,schedule", METHODS)
def test_batched_training_in_float32_gives_the_same_losses(method, schedule):
    # In float32 the parameters can differ by +-lr per step where a gradient is zero up to rounding
    # (see the module docstring), so this checks the loss histories, and FeatImpute's loosely.
    configs, data = _three_runs(method, schedule)
    alone = [train(config, *entry) for config, entry in zip(configs, data)]
    together = train_batched(configs, data)
    tol = 1e-2 if method == "featimpute" else 1e-4
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.history["loss"], a.history["loss"], rtol=tol, atol=tol)


def test_batched_training_with_augmentation_and_recalibration(float64_training):
    # The augmentation's random state belongs to each model (seeded from its config), so batching
    # shows every model exactly the inputs it would see alone; HAM's precise-BN statistics too.
    configs = [TrainConfig("ham", schedule="mixed", iterations=3, seed=s, **SMALL, batch_size=6) for s in (1, 2)]
    data = [_data(12, seed=s) for s in (1, 2)]
    alone = [train(config, *entry) for config, entry in zip(configs, data)]
    together = train_batched(configs, data)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.history["loss"], a.history["loss"], rtol=1e-9, atol=1e-12)
        _assert_same_models(a.model, b.model, tol=1e-7)


def test_callbacks_see_each_model_and_can_stop_it(float64_training):
    configs = [TrainConfig("dropout", iterations=6, seed=s, **SMALL, batch_size=6, augment=False) for s in (0, 1)]
    data = [_data(12, seed=s) for s in (0, 1)]

    def recorder(log, stop_at=None):
        def callback(iteration, model):
            log.append((iteration, model.training, model.head.weight.detach().clone()))
            return iteration == stop_at
        return callback

    logs_alone, logs_together = [[], []], [[], []]
    alone = [train(c, *d, callback=recorder(log, stop), eval_every=2)
             for c, d, log, stop in zip(configs, data, logs_alone, (4, None))]
    together = train_batched(configs, data, callbacks=[recorder(logs_together[0], 4), recorder(logs_together[1])], eval_every=2)
    assert [it for it, *_ in logs_together[0]] == [2, 4] and [it for it, *_ in logs_together[1]] == [2, 4, 6]
    assert together[0].history["stopped_early"] and together[0].history["iterations"] == 4
    assert not together[1].history["stopped_early"] and together[1].history["iterations"] == 6
    for log_a, log_b in zip(logs_alone, logs_together):
        for (it_a, _, head_a), (it_b, training_b, head_b) in zip(log_a, log_b, strict=True):
            assert it_a == it_b and training_b
            torch.testing.assert_close(head_b, head_a, rtol=1e-7, atol=1e-7)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.history["loss"], a.history["loss"], rtol=1e-9, atol=1e-12)
        _assert_same_models(a.model, b.model, tol=1e-7)


def test_what_cannot_be_batched_is_named():
    base = TrainConfig("ham", widths=WIDTHS)
    assert batching_problem([base, TrainConfig("ham", widths=WIDTHS, seed=3, iterations=7)]) is None
    assert "method" in batching_problem([base, TrainConfig("dropout", widths=WIDTHS)])
    assert "widths" in batching_problem([base, TrainConfig("ham", widths=(3, 4, 4, 8))])
    assert "lr" in batching_problem([base, TrainConfig("ham", widths=WIDTHS, lr=1e-3)])
    stacked_shared = TrainConfig("featimpute", widths=WIDTHS)  # the default: a stacked shared encoder
    assert "stacked shared encoder" in batching_problem([stacked_shared, stacked_shared])
    per_modality = TrainConfig("featimpute", widths=WIDTHS, featimpute_shared="per-modality")
    assert batching_problem([per_modality, per_modality]) is None
    with pytest.raises(ValueError, match="cannot train these models batched: the models differ in method"):
        train_batched([base, TrainConfig("dropout", widths=WIDTHS)], [_data(9, 0)] * 2)
    with pytest.raises(ValueError, match="cannot stack"):
        stack_models([torch.nn.Linear(2, 2)])
