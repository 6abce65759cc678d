"""The training loop and prediction for HAM and the baselines.

Every method trains with batch 16, learning rate 1e-4 and a focal loss weighted by inverse class
frequency (``hamfast.training.losses``); HAM uses RMSprop, the baselines Adam. What a step sees
depends on the method (``hamfast.training.sampling``); in every case a sample is only shown with
modalities it really has:

* ``standard``: complete samples only;
* ``dropout``: every sample masked with its own random non-empty subset of its modalities, drawn
  by the masking distribution ``TrainConfig.dropout_mode`` (each present modality dropped with
  probability ``dropout_p`` = 0.5 by default, i.e. every non-empty subset equally likely;
  ``"subset"``: uniform over the subsets), keeping its own pattern with probability
  ``dropout_keep``;
* ``featimpute``: one random pattern per batch, the batch from the samples that have it; the loss
  adds FeatImpute's consistency and domain terms;
* ``ham``, ``schedule="paper"``: one random pattern for ``n_it`` (10) consecutive batches, each
  batch from the samples that have it (masked down to it); ``"paper-exact"``: the same, but only
  from the samples whose own pattern it is; ``schedule="mixed"``: ``mixed_groups`` pattern groups
  per batch, patterns drawn by Dropout's masking distribution, the mixed batch in one fused call.

Before each callback and at the end, HAM's per-pattern batch-norm statistics are recomputed with
the current weights (``hamfast.training.recalibrate``; ``TrainConfig.recalibrate``). With
``TrainConfig.recalibrate_baselines`` (off by default, as in the paper) the baselines get the same
at prediction: ``predict_proba(..., calibration=calibration_set(config, images, available))``
recomputes their batch-norm statistics for each test pattern.

Example::

    >>> config = TrainConfig("ham", iterations=2000, widths=(16, 32, 32, 64))
    >>> result = train(config, images, available, labels, progress=True)
    >>> probs = predict_proba(result.model, test_images, test_available)
    >>> save_checkpoint("ham.pt", result)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from hamfast.models import BACKENDS, METHODS, NORMS, HAM, FeatImpute, build_model
from hamfast.models.featimpute import SHARED_INPUTS
from hamfast.models.inputs import mask_missing
from hamfast.names import BRATS_MODALITIES, check_class_names, check_modality_names, default_class_names
from hamfast.training.divergence import (
    DivergenceError,
    check_inputs_finite,
    checked_losses,
    gradients_finite,
    nonfinite_tensors,
)
from hamfast.training.losses import class_weights, focal_loss
from hamfast.training.recalibrate import recalibrate_pattern_norms, recalibrated_copy
from hamfast.training.sampling import DROPOUT_MODES, make_sampler

Tensor = torch.Tensor

__all__ = [
    "PRECISIONS",
    "SCHEDULES",
    "SIZE_LIMITS",
    "TrainConfig",
    "TrainResult",
    "train",
    "build_from_config",
    "initial_model",
    "predict_proba",
    "calibration_set",
]

SCHEDULES = ("paper", "paper-exact", "mixed")
PRECISIONS = ("fp32", "tf32", "bf16")
# Upper bounds of the fields that size memory, far above any sensible run (the paper: widths 64-512,
# 5x5 kernels, batch 16), so a hand-edited config or checkpoint fails at once instead of after
# minutes of allocation.
SIZE_LIMITS = {"widths": 8192, "kernel_size": 31, "hidden": 1024, "num_classes": 1000, "batch_size": 65536}


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Args:
        method: ``"standard"``, ``"dropout"``, ``"featimpute"`` or ``"ham"``.
        schedule: HAM's pattern schedule, ``"paper"``, ``"paper-exact"`` or ``"mixed"`` (ignored
            by the baselines; see the module).
        iterations: optimiser steps (a callback may stop earlier).
        batch_size: samples per step.
        lr: learning rate (RMSprop for HAM, Adam otherwise).
        widths: CBRTiny block widths.
        hidden: HAM's hypernetwork width.
        kernel_size: CBRTiny conv kernel side.
        seed: seeds model initialisation, batch and pattern sampling, and augmentation.
        device: torch device for the model and batches.
        augment: apply ``hamfast.data.ModalityAugment`` to every training sample.
        n_it: steps per pattern in HAM's paper schedule.
        backend: HAM's grouped-convolution backend, ``"fused"`` or ``"reference"``.
        num_classes: output classes C (None: ``len(classes)``, else 3).
        modalities: the M input channel names, in channel order (BraTS's t1, t1ce, t2, flair by
            default); images are [N, M, H, W] and HAM's patterns run over 2**M - 1.
        classes: the C class names, label k being ``classes[k]`` (None: BraTS survival's short,
            mid, long for C = 3, else "0", "1", ...).
        focal_gamma: focusing parameter of the focal loss.
        recalibrate: HAM: recompute every pattern's batch-norm running statistics with the
            current weights on the training samples (precise BN,
            :func:`hamfast.training.recalibrate.recalibrate_pattern_norms`) before each callback
            and at the end; without it, rarely trained patterns keep stale statistics.
        recalibrate_baselines: the baselines: :func:`calibration_set` gives the samples
            :func:`predict_proba` recomputes their statistics on, per test pattern (None when
            this is False, the default: the paper's baselines keep their trained statistics).
        ham_norm: HAM's batch norm, ``"per-pattern"`` (statistics per pattern) or ``"shared"``
            (one batch norm for every pattern, as in the paper's plain task model).
        ham_frozen: HAM with its hypernetwork's last weight fixed at 0: every pattern gets the
            same generated CBRTiny (the learned bias), with per-pattern normalisation; the
            control that shows what per-pattern weights add beyond calibration.
        mixed_groups: HAM's ``mixed`` schedule: pattern groups per batch (0: a pattern per
            sample; the default 4 gives groups of 4 at batch 16, so that per-pattern batch
            statistics never come from one sample; at most ``batch_size`` groups are made).
        dropout_mode: the masking distribution of Dropout and of HAM's ``mixed`` schedule,
            ``"channel"`` (each present modality dropped independently with probability
            ``dropout_p``) or ``"subset"`` (uniform over the non-empty subsets of the sample's
            modalities, the same distribution as ``"channel"`` with p = 0.5).
        dropout_p: drop probability per modality of ``"channel"``, in [0, 1); the default 0.5
            makes every pattern within a sample's modalities equally likely, as HAM's "randomly
            chosen" mu of the paper (docs/paper.md).
        dropout_keep: probability that a sample is shown with its own pattern, in [0, 1].
        featimpute_shared: what FeatImpute's shared encoder reads: ``"stacked"`` (the stacked
            modalities, as the paper words it) or ``"per-modality"`` (each modality on its own,
            ShaSpec's form); see :class:`hamfast.models.FeatImpute`.
        precision: the arithmetic of the training steps. ``"fp32"`` (default): float32 with TF32
            off (``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32``
            False for the run), the same numbers on CPU and GPU; ``"tf32"``: both flags True (a
            GPU's tensor cores round float32 operands to 10-bit mantissas; no effect on CPU);
            ``"bf16"``: forward and loss under ``torch.autocast(device_type, torch.bfloat16)``
            (weights, gradients and optimiser state stay float32; TF32 off for what autocast
            keeps in float32). Prediction and batch-norm recalibration run in float32.
    """

    method: str
    schedule: str = "paper"
    iterations: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    widths: tuple[int, ...] = (64, 128, 256, 512)
    hidden: int = 4
    kernel_size: int = 5
    seed: int = 0
    device: str = "cpu"
    augment: bool = True
    n_it: int = 10
    backend: str = "fused"
    num_classes: Optional[int] = None
    focal_gamma: float = 2.0
    recalibrate: bool = True
    ham_norm: str = "per-pattern"
    dropout_mode: str = "channel"
    dropout_p: float = 0.5
    dropout_keep: float = 0.0
    precision: str = "fp32"
    recalibrate_baselines: bool = False
    ham_frozen: bool = False
    mixed_groups: int = 4
    featimpute_shared: str = "stacked"
    modalities: tuple[str, ...] = BRATS_MODALITIES
    classes: Optional[tuple[str, ...]] = None

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.modalities = check_modality_names(self.modalities, where="TrainConfig.modalities")
        if self.classes is None:
            self.classes = default_class_names(self.num_classes)
        self.classes = check_class_names(self.classes, where="TrainConfig.classes")
        if self.num_classes is None:
            self.num_classes = len(self.classes)
        if self.num_classes != len(self.classes):
            raise ValueError(f"num_classes {self.num_classes} disagrees with the {len(self.classes)} class names "
                             f"{', '.join(self.classes)}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {self.backend!r}")
        for name in ("iterations", "batch_size", "n_it", "num_classes", "hidden", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, most in SIZE_LIMITS.items():
            values = self.widths if name == "widths" else (getattr(self, name),)
            if not values or any(v < 1 or v > most for v in values):
                raise ValueError(f"{name} must lie in [1, {most}] (it sizes memory), got {getattr(self, name)}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.ham_norm not in NORMS:
            raise ValueError(f"ham_norm must be one of {NORMS}, got {self.ham_norm!r}")
        if self.dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"dropout_mode must be one of {DROPOUT_MODES}, got {self.dropout_mode!r}")
        if not 0 <= self.dropout_p < 1:
            raise ValueError(f"dropout_p must lie in [0, 1), got {self.dropout_p}")
        if not 0 <= self.dropout_keep <= 1:
            raise ValueError(f"dropout_keep must lie in [0, 1], got {self.dropout_keep}")
        if self.featimpute_shared not in SHARED_INPUTS:
            raise ValueError(f"featimpute_shared must be one of {SHARED_INPUTS}, got {self.featimpute_shared!r}")
        if self.ham_frozen and self.method != "ham":
            raise ValueError(f"ham_frozen is HAM's control, not an option of method {self.method!r}")
        if self.mixed_groups < 0:
            raise ValueError(f"mixed_groups must be >= 0, got {self.mixed_groups}")

    @property
    def in_channels(self) -> int:
        """M, the input modalities."""
        return len(self.modalities)

    def to_dict(self) -> dict:
        """Plain types only (tuples as lists), for JSON and checkpoints."""
        out = dataclasses.asdict(self)
        for name in ("widths", "modalities", "classes"):
            out[name] = list(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)


@dataclass
class TrainResult:
    """A trained model with its config and history.

    Attributes:
        model: the trained network (in eval mode after :func:`train` and :func:`load_checkpoint`).
        config: the run's :class:`TrainConfig`.
        history: ``"loss"``: the training loss of every step (list[float]); ``"iterations"``: steps
            done; ``"stopped_early"``: whether the callback stopped the run; ``"class_weights"``:
            the focal-loss weights.
    """

    model: nn.Module
    config: TrainConfig
    history: dict = field(default_factory=dict)


def build_from_config(config: TrainConfig) -> nn.Module:
    """The (untrained) network that ``config`` describes."""
    return build_model(
        config.method,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        widths=config.widths,
        hidden=config.hidden,
        kernel_size=config.kernel_size,
        backend=config.backend,
        norm=config.ham_norm,
        frozen=config.ham_frozen,
        featimpute_shared=config.featimpute_shared,
    )


def initial_model(config: TrainConfig) -> nn.Module:
    """The freshly initialised network a run of ``config`` starts from (seeded by ``config.seed``,
    on the CPU; the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_from_config(config)


def _as_inputs(images, available, labels=None, *, modalities: int):
    """Checked tensors: images float32 [N, M, H, W], available bool [N, M], labels int64 [N]
    (``modalities``: the M the model takes)."""
    images = torch.as_tensor(images, dtype=torch.float32)
    available = torch.as_tensor(available).bool()
    if images.dim() != 4 or images.shape[1] != modalities:
        raise ValueError(f"images must be [N, M={modalities}, H, W] (the model's modalities), got {tuple(images.shape)}")
    if available.shape != images.shape[:2]:
        raise ValueError(f"available must be [N, M={modalities}] = {tuple(images.shape[:2])}, got {tuple(available.shape)}")
    if labels is None:
        return images, available
    labels = torch.as_tensor(labels).long()
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be [N] = [{images.shape[0]}], got {tuple(labels.shape)}")
    return images, available, labels


def _make_augment(config: TrainConfig):
    """A per-sample ``(image [M, H, W], mu bool [M]) -> image`` augmentation, or None."""
    if not config.augment:
        return None
    from hamfast.data import ModalityAugment

    return ModalityAugment(seed=config.seed)


def _batch(images: Tensor, index: Tensor, mu: Tensor, augment, device) -> tuple[Tensor, Tensor]:
    """The step's input x [b, M, H, W] and mu bool [b, M] on ``device``; the channels absent from mu
    are zeroed before the (per-sample) augmentation, so it never sees them."""
    x = mask_missing(images[index.to(images.device)], mu.to(images.device))
    if augment is not None:
        x = torch.stack([augment(sample, m) for sample, m in zip(x, mu)])
    return x.to(device), mu.to(device)


def _step_loss(model: nn.Module, loss_fn, x: Tensor, mu: Tensor, target: Tensor) -> Tensor:
    """The focal task loss of a batch (``target`` int64 [b, 1]), plus FeatImpute's auxiliary terms."""
    if isinstance(model, FeatImpute):
        features = model.encode(x, mu)
        return loss_fn(model.classify(features), target) + model.auxiliary_loss(features)
    return loss_fn(model(x, mu), target)


def _make_sampler(config: TrainConfig, available: Tensor):
    """The batch sampler of a run (``hamfast.training.sampling``), its generator seeded by ``config.seed``."""
    generator = torch.Generator().manual_seed(config.seed)
    return make_sampler(
        config.method, config.schedule, available, config.batch_size, config.n_it, generator,
        dropout_mode=config.dropout_mode, dropout_p=config.dropout_p, dropout_keep=config.dropout_keep,
        mixed_groups=config.mixed_groups,
    )


@dataclass
class _RunStart:
    """What one run starts from, built the same way by :func:`train` and ``train_batched``: its
    batch sampler, focal loss (class weights from the sampler's pool), freshly initialised model
    (seeded by ``config.seed``), augmentation, image source and empty history."""

    sampler: object
    loss_fn: Callable
    model: nn.Module
    augment: object
    source: Tensor
    history: dict


def _start_run(config: TrainConfig, images: Tensor, available: Tensor, labels: Tensor, device) -> _RunStart:
    check_inputs_finite(images, available, config.modalities)
    sampler = _make_sampler(config, available)
    weights = class_weights(labels[sampler.pool], config.num_classes)
    loss_fn = focal_loss(weights.to(device), config.focal_gamma)
    model = initial_model(config).to(device)
    augment = _make_augment(config)
    source = images if augment is not None else images.to(device)  # augmentation runs on the CPU
    history = {"loss": [], "iterations": 0, "stopped_early": False, "class_weights": weights.tolist()}
    return _RunStart(sampler, loss_fn, model, augment, source, history)


def train(
    config: TrainConfig,
    images,
    available,
    labels,
    *,
    callback: Optional[Callable[[int, nn.Module], Optional[bool]]] = None,
    eval_every: Optional[int] = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``config.method`` on the given samples.

    Args:
        config: the run.
        images: float [N, 4, H, W] (tensor or numpy); absent channels may hold anything, they are
            never shown.
        available: bool [N, 4], the modalities each sample really has (the training mask).
        labels: int64 [N], values in ``[0, num_classes)``.
        callback: ``callback(iteration, model)`` after every ``eval_every`` steps (iteration counts
            the steps done); returning True stops training. A HAM's batch-norm statistics are
            recomputed first (``config.recalibrate``). The model is put back in train mode after
            it returns.
        eval_every: steps between callback calls; needed when ``callback`` is given.
        progress: show a tqdm progress bar with the running loss and ETA.

    Returns:
        A :class:`TrainResult`; the model is in eval mode.

    Raises:
        ValueError: NaN or Inf in a present modality of ``images`` (before the first step).
        DivergenceError: (a ``ValueError``, :mod:`hamfast.training.divergence`) the first step
            whose loss or gradient is not finite, or weights that end non-finite; one line naming
            the step and the likely cause. Nothing is returned, so nothing can be saved.

    The same config (seed) gives the same loss history on CPU.
    """
    images, available, labels = _as_inputs(images, available, labels, modalities=config.in_channels)
    if callback is not None and (eval_every is None or eval_every < 1):
        raise ValueError(f"eval_every must be a positive int when callback is given, got {eval_every}")
    device = torch.device(config.device)
    run = _start_run(config, images, available, labels, device)
    sampler, loss_fn, model, augment, source, history = (
        run.sampler, run.loss_fn, run.model, run.augment, run.source, run.history
    )
    optimizer_cls = torch.optim.RMSprop if config.method == "ham" else torch.optim.Adam
    optimizer = optimizer_cls(model.parameters(), lr=config.lr)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, desc=config.method, unit="it", dynamic_ncols=True)
    recalibrated_at = None
    model.train()
    precision = contextlib.ExitStack()
    precision.enter_context(_tf32(config.precision == "tf32"))
    try:
        for iteration in range(1, config.iterations + 1):
            index, mu = sampler()
            x, mu = _batch(source, index, mu, augment, device)
            target = labels[index].to(device)[:, None]
            with torch.autocast(device.type, torch.bfloat16, enabled=config.precision == "bf16"):
                loss = _step_loss(model, loss_fn, x, mu, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads_ok = gradients_finite(model.parameters())
            optimizer.step()
            history["loss"].extend(checked_losses(loss, grads_ok, iteration, config.lr, [x]))
            history["iterations"] = iteration
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", refresh=False)
            if callback is not None and iteration % eval_every == 0:
                recalibrated_at = _recalibrate(model, config, source, available, iteration)
                stop = callback(iteration, model)
                model.train()
                if stop:
                    history["stopped_early"] = True
                    break
    finally:
        precision.close()
        if bar is not None:
            bar.close()
    if recalibrated_at != history["iterations"]:
        _recalibrate(model, config, source, available, history["iterations"])
    check_model_finite(model, config)
    return TrainResult(model.eval(), config, history)


def check_model_finite(model: nn.Module, config: TrainConfig) -> None:
    """Raise :class:`DivergenceError` when a weight or buffer of the trained model is NaN or Inf."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise DivergenceError(f"training diverged: {len(bad)} weight tensor(s) hold NaN or Inf after training "
                              f"(first: {bad[0]}); likely cause: the learning rate {config.lr:g} is too high")


@contextlib.contextmanager
def _tf32(enabled: bool):
    """TF32 for cuDNN convolutions and CUDA matmuls on (or off) inside, the previous flags restored after."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def _recalibrate(model: nn.Module, config: TrainConfig, images: Tensor, available: Tensor, iteration: int) -> int:
    """Precise per-pattern batch-norm statistics for HAM (if ``config.recalibrate``); returns ``iteration``."""
    if isinstance(model, HAM) and config.recalibrate:
        recalibrate_pattern_norms(model, images, available)
    return iteration


def calibration_set(config: TrainConfig, images, available):
    """The training samples a baseline's batch-norm statistics are recomputed on at prediction,
    ``(images [n, M, H, W], available bool [n, M])``, or None.

    None for HAM (``train`` recalibrates it itself) and when ``config.recalibrate_baselines`` is
    off (the default).
    Standard gets its complete samples only (the ones it trains on), Dropout and FeatImpute every
    training sample with its training mask.
    """
    if not config.recalibrate_baselines or config.method == "ham":
        return None
    images, available = _as_inputs(images, available, modalities=config.in_channels)
    if config.method == "standard":
        keep = available.all(1)
        return images[keep], available[keep]
    return images, available


@torch.no_grad()
def predict_proba(model: nn.Module, images, available, *, batch_size: int = 64, device="cpu", calibration=None) -> Tensor:
    """Class probabilities of every sample, in eval mode without gradients.

    Args:
        model: any hamfast model (moved to ``device``; its train/eval mode is restored afterwards).
        images: float [N, M, H, W] (tensor or numpy), M the model's modalities.
        available: bool [N, M], the modalities to use for each sample (the others are zeroed). HAM
            runs the patterns of a batch together.
        batch_size: samples per forward pass.
        device: where to run.
        calibration: optional ``(images, available)`` of training samples (:func:`calibration_set`):
            for a model other than HAM, each distinct test pattern is then predicted by a copy whose
            batch-norm statistics are recomputed on the calibration samples that have the pattern,
            masked to it (:func:`hamfast.training.recalibrate.recalibrated_copy`); ``model`` is
            not changed.

    Returns:
        float32 [N, num_classes] on the CPU, rows summing to 1.

    Raises:
        DivergenceError: (a ``ValueError``) a probability is NaN or Inf.
    """
    images, available = _as_inputs(images, available, modalities=model.in_channels)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(device).eval()
    try:
        if calibration is None or isinstance(model, HAM):
            return _predict(model, images, available, batch_size, device)
        ref_images, ref_available = _as_inputs(*calibration, modalities=model.in_channels)
        out = None
        patterns, group = torch.unique(available, dim=0, return_inverse=True)
        for g, mu in enumerate(patterns):
            rows = (group == g).nonzero()[:, 0]
            calibrated = recalibrated_copy(model, ref_images, ref_available, mu)
            probs = _predict(calibrated, images[rows], available[rows], batch_size, device)
            if out is None:
                out = probs.new_empty((images.shape[0], probs.shape[1]))
            out[rows] = probs
        return out
    finally:
        model.train(was_training)


def _predict(model: nn.Module, images: Tensor, available: Tensor, batch_size: int, device) -> Tensor:
    chunks = [
        torch.softmax(model(images[i : i + batch_size].to(device), available[i : i + batch_size].to(device)), 1)
        for i in range(0, images.shape[0], batch_size)
    ]
    probs = torch.cat(chunks).float().cpu()
    bad = ~torch.isfinite(probs).all(1)
    if bool(bad.any()):  # never NaN probabilities (a NaN argmax would pass for class 0)
        raise DivergenceError(f"the model gives NaN or Inf probabilities for {int(bad.sum())} of {probs.shape[0]} "
                              f"sample(s) (first: {int(bad.nonzero()[0])}): its weights or the input are not usable")
    return probs
