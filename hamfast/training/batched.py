"""Train R models of one method at once: the same results as R calls of :func:`~hamfast.training.train`.

The R models are stacked (:mod:`hamfast.models.stacked`): every conv layer of all of them is one
grouped convolution per step. Each model keeps everything that makes its run its own:

* its config (seed, iterations, batch size, schedule, augmentation, ...) and its training data
  (its own split, fold and missingness draw);
* the random streams :func:`~hamfast.training.train` would use for that config: the sampler's
  generator, the augmentation's random state and the initialisation seed, built by the same code;
* its own class weights and loss (mean over its own batch), its own batch-norm statistics (per
  model, and per pattern for HAM) and its own callback;
* its own length: a model leaves the batch after its last step (or when its callback stops it),
  and its parameters are frozen from then on.

Why the sum of the losses is R separate trainings: model r's parameters only reach model r's
samples, so the gradient of ``sum_r loss_r`` with respect to them is ``grad loss_r``; Adam and
RMSprop update every element from its own gradient history and the shared step count (all models
start together), so the update of model r's slice is the update model r would get alone. The
results agree with one-by-one training up to float rounding (summation order inside the convs).

Example::

    >>> configs = [TrainConfig("ham", iterations=300, seed=s) for s in range(8)]
    >>> results = train_batched(configs, [(images, available, labels)] * 8)
    >>> results[3].model      # an ordinary HAM, as train(configs[3], images, available, labels).model
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from hamfast.models.stacked import stack_models
from hamfast.training.trainer import (
    TrainConfig,
    TrainResult,
    _as_inputs,
    _batch,
    _recalibrate,
    _start_run,
    check_model_finite,
)
from hamfast.training.divergence import checked_losses, gradients_finite

Tensor = torch.Tensor

__all__ = ["BATCHABLE_FIELDS", "batching_problem", "train_batched"]

# TrainConfig fields the batched loop knows: those in SHARED must agree across the stacked models,
# the others may differ per model. A field added to TrainConfig later is only accepted at its
# default value (the batched loop may not implement what it changes).
SHARED = ("method", "widths", "hidden", "kernel_size", "num_classes", "classes", "modalities", "lr", "device", "backend")
PER_MODEL = ("schedule", "iterations", "batch_size", "seed", "augment", "n_it", "focal_gamma", "recalibrate",
             "dropout_mode", "dropout_p", "dropout_keep", "mixed_groups", "recalibrate_baselines", "featimpute_shared")
BATCHABLE_FIELDS = SHARED + PER_MODEL

Callback = Callable[[int, nn.Module], Optional[bool]]


def batching_problem(configs: Sequence[TrainConfig]) -> Optional[str]:
    """Why these configs cannot train as one stacked model (a sentence), or None when they can."""
    if len(configs) == 0:
        return "no model to train"
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    for config in configs:
        for name, value in config.to_dict().items():
            if name not in BATCHABLE_FIELDS and value != defaults.get(name, object()):
                return f"TrainConfig.{name}={value!r} is not supported by batched training"
    if configs[0].method == "featimpute" and any(c.featimpute_shared != "per-modality" for c in configs):
        return "FeatImpute with a stacked shared encoder is not supported by batched training"
    first = configs[0].to_dict()
    for config in configs[1:]:
        for name in SHARED:
            if config.to_dict()[name] != first[name]:
                return f"the models differ in {name} ({first[name]!r} vs {config.to_dict()[name]!r})"
    return None


@dataclass
class _Member:
    """One model's own state in the batched loop."""

    config: TrainConfig
    model: nn.Module
    source: Tensor
    available: Tensor
    labels: Tensor
    sampler: object
    loss_fn: object
    augment: object
    callback: Optional[Callback]
    history: dict
    recalibrated_at: Optional[int] = None
    result: Optional[TrainResult] = None


def train_batched(
    configs: Sequence[TrainConfig],
    data: Sequence[tuple],
    *,
    callbacks: Optional[Sequence[Optional[Callback]]] = None,
    eval_every: Optional[int] = None,
    on_step: Optional[Callable[[int], None]] = None,
    on_done: Optional[Callable[[int, TrainResult], None]] = None,
    backend: str = "fused",
) -> list[TrainResult]:
    """Train ``len(configs)`` models of one method together, each as :func:`~hamfast.training.train` would.

    Args:
        configs: R configs (see :func:`batching_problem` for what must agree).
        data: R tuples ``(images float [N_r, 4, H, W], available bool [N_r, 4], labels int64 [N_r])``,
            model r's training data (H, W the same for all).
        callbacks: R callbacks or None, each as ``train``'s ``callback`` (called with model r as an
            ordinary model after every ``eval_every`` of its steps; returning True stops model r).
        eval_every: steps between callback calls; needed when a callback is given.
        on_step: called after every step with the number of models that took it (progress bars).
        on_done: called as ``on_done(r, result)`` as soon as model r is done (to save it at once).
        backend: grouped conv of the baselines' stacked trunks, ``"fused"`` or ``"reference"``.

    Returns:
        R :class:`TrainResult`, in the order of ``configs``; result r is what
        ``train(configs[r], *data[r], callback=callbacks[r], eval_every=eval_every)`` returns, up
        to float rounding.
    """
    configs = list(configs)
    problem = batching_problem(configs)
    if problem is not None:
        raise ValueError(f"cannot train these models batched: {problem}")
    if len(data) != len(configs):
        raise ValueError(f"data has {len(data)} entries for {len(configs)} configs")
    callbacks = list(callbacks) if callbacks is not None else [None] * len(configs)
    if len(callbacks) != len(configs):
        raise ValueError(f"callbacks has {len(callbacks)} entries for {len(configs)} configs")
    if any(c is not None for c in callbacks) and (eval_every is None or eval_every < 1):
        raise ValueError(f"eval_every must be a positive int when a callback is given, got {eval_every}")
    device = torch.device(configs[0].device)
    members = [_member(config, entry, callback, device) for config, entry, callback in zip(configs, data, callbacks)]
    sizes = {tuple(m.source.shape[2:]) for m in members}
    if len(sizes) > 1:
        raise ValueError(f"the models' images differ in size: {sorted(sizes)}")

    stacked = stack_models([m.model for m in members], backend).to(device).train()
    optimizer = SliceOptimizer(stacked, "rmsprop" if configs[0].method == "ham" else "adam", configs[0].lr)
    active = list(range(len(members)))
    step = 0
    while active:
        step += 1
        xs, mus, targets, owners = [], [], [], []
        for r in active:
            m = members[r]
            index, mu = m.sampler()
            x, mu = _batch(m.source, index, mu, m.augment, device)
            xs.append(x)
            mus.append(mu)
            targets.append(m.labels[index].to(device)[:, None])
            owners.append(torch.full((x.shape[0],), r, dtype=torch.long))
        owner, mu = torch.cat(owners).to(device), torch.cat(mus)
        logits, aux = stacked(torch.cat(xs), mu, owner)
        losses, start = [], 0
        for r, target in zip(active, targets):
            stop = start + target.shape[0]
            loss = members[r].loss_fn(logits[start:stop], target)
            losses.append(loss + aux[r] if aux is not None else loss)
            start = stop
        total = torch.stack(losses).sum()
        optimizer.zero_grad()
        total.backward()
        grads_ok = gradients_finite(stacked.parameters())
        used = torch.zeros(len(members), dtype=torch.bool, device=device)
        used[active] = True
        optimizer.step(used, stacked.trunk_usage(owner, mu))
        values = checked_losses(torch.stack(losses), grads_ok, step, configs[0].lr, xs, models=active)
        for r, value in zip(active, values):
            members[r].history["loss"].append(value)
            members[r].history["iterations"] = step
        if on_step is not None:
            on_step(len(active))
        for r in active:
            m = members[r]
            stopped = False
            if m.callback is not None and step % eval_every == 0:
                stacked.copy_to(r, m.model)
                m.recalibrated_at = _recalibrate(m.model, m.config, m.source, m.available, step)
                stopped = bool(m.callback(step, m.model))
                m.model.train()
                stacked.copy_from(r, m.model)  # recalibrated statistics go on, as in train()
                m.history["stopped_early"] = stopped
            if stopped or step == m.config.iterations:
                _finish(m, stacked, r)
                if on_done is not None:
                    on_done(r, m.result)
        active = [r for r in active if members[r].result is None]
    return [m.result for m in members]


class SliceOptimizer:
    """Adam or RMSprop, with torch's defaults, stepping each model's slice of the stacked parameters
    on its own: only the slices used in a step move, each with its own step count.

    ``torch.optim`` steps a whole tensor, and a parameter that got no gradient (``None``) is skipped
    with its step count. In one-by-one training FeatImpute's encoder of a modality absent from the
    batch gets no gradient, so it must not move (Adam's momentum would move it); a model that left
    the batch must not move either. The update of a used slice is torch's (``_single_tensor_adam``,
    ``_single_tensor_rmsprop``): Adam ``m = lerp(m, g, 1 - b1)``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``; RMSprop
    ``v = a v + (1 - a) g^2``, ``p -= lr * g / (sqrt(v) + eps)``.

    Args:
        stacked: the stacked model; its :meth:`trunk_parameters` have a first axis over trunks, all
            other parameters one over models.
        kind: ``"adam"`` (betas 0.9, 0.999) or ``"rmsprop"`` (alpha 0.99); eps 1e-8.
        lr: learning rate.
    """

    def __init__(self, stacked: nn.Module, kind: str, lr: float):
        if kind not in ("adam", "rmsprop"):
            raise ValueError(f"kind must be 'adam' or 'rmsprop', got {kind!r}")
        self.kind, self.lr, self.eps = kind, float(lr), 1e-8
        self.beta1, self.beta2, self.alpha = 0.9, 0.999, 0.99
        trunk = {id(p) for p in stacked.trunk_parameters()}
        self.params = [(p, id(p) in trunk) for p in stacked.parameters()]
        self.state = {}
        for p, _ in self.params:
            # step counts and bias corrections in float64, as torch forms them (Python floats)
            state = {"sq": torch.zeros_like(p), "step": torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)}
            if kind == "adam":
                state["avg"] = torch.zeros_like(p)
            self.state[p] = state

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, used_models: Tensor, used_trunks: Optional[Tensor]) -> None:
        """Update the slices used in this step: ``used_models`` bool [R], ``used_trunks`` bool [S] or None."""
        for p, is_trunk in self.params:
            if p.grad is None:
                continue
            used = used_trunks if is_trunk else used_models
            shape = (-1,) + (1,) * (p.dim() - 1)
            mask = used.view(shape)
            g, state = p.grad, self.state[p]
            if self.kind == "rmsprop":
                sq = torch.where(mask, state["sq"] * self.alpha + (1 - self.alpha) * g * g, state["sq"])
                update = g / (sq.sqrt() + self.eps) * self.lr
            else:
                state["step"] += used.to(torch.float64)
                step = state["step"].view(shape)
                avg = torch.where(mask, state["avg"].lerp(g, 1 - self.beta1), state["avg"])
                sq = torch.where(mask, state["sq"] * self.beta2 + (1 - self.beta2) * g * g, state["sq"])
                correction1 = (1 - self.beta1**step).to(p.dtype)
                correction2_sqrt = (1 - self.beta2**step).sqrt().to(p.dtype)
                update = (self.lr / correction1) * avg / (sq.sqrt() / correction2_sqrt + self.eps)
                state["avg"] = avg
            state["sq"] = sq
            p.sub_(torch.where(mask, update, torch.zeros((), dtype=p.dtype, device=p.device)))


def _member(config: TrainConfig, entry, callback: Optional[Callback], device: torch.device) -> _Member:
    """Model r's data, sampler, loss, augmentation and initial model, built exactly as ``train`` builds them."""
    images, available, labels = _as_inputs(*entry, modalities=config.in_channels)
    run = _start_run(config, images, available, labels, device)
    return _Member(config, run.model, run.source, available, labels, run.sampler, run.loss_fn, run.augment, callback,
                   run.history)


def _finish(m: _Member, stacked, r: int) -> None:
    """Freeze model r: copy its slice into its own model, recalibrate as ``train`` does at the end."""
    stacked.copy_to(r, m.model)
    if m.recalibrated_at != m.history["iterations"]:
        _recalibrate(m.model, m.config, m.source, m.available, m.history["iterations"])
    check_model_finite(m.model, m.config)
    m.result = TrainResult(m.model.eval(), m.config, m.history)
