"""The classifiers: CBRTiny, HAM and the baselines.

Every model is called as ``model(x, available)`` with ``x`` [B, 4, H, W] and ``available`` bool
[B, 4] and returns logits [B, num_classes]; absent channels are zeroed inside.

The four methods (:data:`METHODS`, built by :func:`build_model`):

* ``"standard"``: a :class:`CBRTiny`, trained only on samples with all modalities;
* ``"dropout"``: a :class:`CBRTiny`, trained on all samples with random channel dropout;
* ``"featimpute"``: :class:`FeatImpute` (ShaSpec-style feature imputation);
* ``"ham"``: :class:`HAM`, the hypernetwork.

Standard and dropout are the same network and differ only in training (``hamfast.training``).
Importing this package needs neither monai nor nibabel.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from hamfast.models.cbrtiny import CBRTiny, CBRTrunk
from hamfast.models.featimpute import FeatImpute, FeatImputeFeatures
from hamfast.models.ham import BACKENDS, HAM, NORMS
from hamfast.models.hypernet import HyperNetwork
from hamfast.models.inputs import min_input_size
from hamfast.models.pattern_norm import PatternBatchNorm

METHODS = ("standard", "dropout", "featimpute", "ham")

__all__ = [
    "METHODS",
    "BACKENDS",
    "NORMS",
    "CBRTiny",
    "CBRTrunk",
    "FeatImpute",
    "FeatImputeFeatures",
    "HAM",
    "HyperNetwork",
    "PatternBatchNorm",
    "build_model",
    "min_input_size",
]


def build_model(
    method: str,
    *,
    in_channels: int = 4,
    num_classes: int = 3,
    widths: Sequence[int] = (64, 128, 256, 512),
    hidden: int = 4,
    kernel_size: int = 5,
    backend: str = "fused",
    norm: str = "per-pattern",
    frozen: bool = False,
    featimpute_shared: str = "stacked",
) -> nn.Module:
    """The network of one method.

    Args:
        method: one of :data:`METHODS`.
        in_channels: modalities.
        num_classes: output classes.
        widths: CBRTiny block widths.
        hidden: HAM's hypernetwork width (ignored by the other methods).
        kernel_size: CBRTiny conv kernel side.
        backend: HAM's grouped-convolution backend, ``"fused"`` or ``"reference"`` (ignored by the
            other methods).
        norm: HAM's batch norm, ``"per-pattern"`` or ``"shared"`` (ignored by the other methods).
        frozen: HAM's frozen-hypernetwork control (ignored by the other methods; see :class:`HAM`).
        featimpute_shared: what FeatImpute's shared encoder reads, ``"stacked"`` or
            ``"per-modality"`` (ignored by the other methods; see :class:`FeatImpute`).
    """
    if method in ("standard", "dropout"):
        return CBRTiny(in_channels, num_classes, widths, kernel_size)
    if method == "featimpute":
        return FeatImpute(in_channels, num_classes, widths, kernel_size, shared_input=featimpute_shared)
    if method == "ham":
        return HAM(in_channels, num_classes, widths, hidden, kernel_size, backend, norm, frozen)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
