"""Non-finite numbers are errors: the training data, every step's loss and gradients, and weights.

A run that meets NaN or Inf stops with :class:`DivergenceError`, one line naming the step and the
likely cause; nothing is returned, so no checkpoint of it can be written.

Cost on a GPU: no host sync is added. Both training loops already fetch every step's loss to the
host for the history; the gradient check rides on that fetch: :func:`gradients_finite` reduces all
gradients to one boolean on the device (queued before the optimiser step, no sync) and
:func:`checked_losses` fetches it together with the losses in the one transfer the loop already
made. The weights are checked once at the end of a run (and by ``save_checkpoint`` /
``load_checkpoint``); the training data once at its start.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import torch

from hamfast.patterns import NAMES

Tensor = torch.Tensor

__all__ = ["DivergenceError", "check_inputs_finite", "gradients_finite", "checked_losses", "nonfinite_tensors"]


class DivergenceError(ValueError):
    """Training met a NaN or Inf (loss, gradient or weights); the message is one line.

    Attributes:
        step: the 1-based step where it happened (None: found in the weights after training).
        model: in ``train_batched``, the position of the model that diverged (None: unknown or
            one model).
    """

    def __init__(self, message: str, step: Optional[int] = None, model: Optional[int] = None):
        super().__init__(message)
        self.step, self.model = step, model


def check_inputs_finite(images: Tensor, available: Tensor, names: Sequence[str] = NAMES) -> None:
    """Refuse training data with NaN or Inf in a modality a sample has (absent channels are never shown).

    Args:
        images: float [N, M, H, W]; available: bool [N, M]; names: the M modality names.

    Raises:
        ValueError: one line naming the first bad sample and modality.
    """
    finite = torch.isfinite(images).flatten(2).all(2) | ~available  # [N, M]
    if bool(finite.all()):
        return
    sample, channel = (~finite).nonzero()[0].tolist()
    bad = int((~finite).any(1).sum())
    raise ValueError(f"the training data holds NaN or Inf values: sample {sample} (of {images.shape[0]}), modality "
                     f"{names[channel]}, {bad} sample(s) in all; fix or drop those cases (a NaN in the data)")


def gradients_finite(parameters: Iterable[Tensor]) -> Tensor:
    """One 0-dim bool on the parameters' device: True when every gradient is finite.

    Queued on the device without a host sync (fetched later by :func:`checked_losses`). A
    gradient so large that its norm overflows float32 counts as non-finite too.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    return torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()


def checked_losses(losses: Tensor, grads_ok: Tensor, step: int, lr: float, inputs: Sequence[Tensor] = (),
                   models: Optional[Sequence[int]] = None) -> list[float]:
    """The step's losses as floats (the loop's one host fetch), or :class:`DivergenceError`.

    Args:
        losses: float [R], the step's loss of each model (R = 1 for ``train``).
        grads_ok: 0-dim bool from :func:`gradients_finite`.
        step: the 1-based step number.
        lr: the learning rate (named as the likely cause when the inputs are finite).
        inputs: the step's input batches (each [b, 4, H, W]), inspected only after a failure.
        models: in ``train_batched``, the model position of each loss (named in the message).
    """
    values = torch.cat([losses.detach().float().reshape(-1), grads_ok.reshape(1).float().to(losses.device)]).tolist()
    values, grads_finite = values[:-1], values[-1] == 1.0
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if not bad and grads_finite:
        return values
    if bad:
        what = f"the loss is {values[bad[0]]}"
    else:
        what = "a gradient is NaN or Inf"
    model = None
    if models is not None and bad:
        model = models[bad[0]]
        what = f"model {model}: {what}"
    if any(not bool(torch.isfinite(x).all()) for x in inputs):
        cause = "a NaN or Inf in the step's input batch (a NaN in the data, or the augmentation)"
    else:
        cause = f"the learning rate {lr:g} is too high for this model and data (try a smaller --lr)"
    raise DivergenceError(f"training diverged at step {step}: {what}; likely cause: {cause}", step, model)


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of ``state`` (a state dict) holding NaN or Inf."""
    return [name for name, t in state.items()
            if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
