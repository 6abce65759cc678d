"""FeatImpute: the feature-imputation baseline, after ShaSpec (Wang et al., CVPR 2023).

Every available modality m of a sample is encoded by a modality-specific encoder on its own channel
``x[:, m:m+1]``; a shared encoder gives the shared features. Both are CBRTiny trunks (blocks +
global average pooling, no head). The shared encoder reads (``shared_input``):

* ``"stacked"`` (default, the paper's wording: "a shared encoder on stacked inputs"): the stacked
  modalities ``x`` [B, M, H, W] with the absent ones zero, one shared feature per sample, used as
  ``shared_m`` for every modality m;
* ``"per-modality"`` (ShaSpec's own form): each available modality on its own channel, one shared
  feature per (sample, modality).

Per available modality the features are fused compositionally::

    fused_m = shared_m + fusion(cat(shared_m, specific_m))

A missing modality's fused feature is imputed with the shared feature of the sample's first
available modality (stacked: the sample's one shared feature). The classifier is one linear layer
on the concatenated fused features of all M modalities. Two auxiliary terms shape the features
during training:

* consistency: mean L1 distance between the shared features of every pair of available
  modalities of a sample (the shared encoder should see the same content in every modality; 0
  with stacked input, where a sample has one shared feature);
* domain: cross-entropy of a linear modality classifier on the specific features (they should
  tell the modalities apart).

``fusion`` is a Linear(2C, C) on pooled features: a 1x1 convolution followed by global average
pooling is the same map, since both are linear.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hamfast.models.cbrtiny import CBRTrunk
from hamfast.models.inputs import as_available, check_input, mask_missing

Tensor = torch.Tensor

__all__ = ["FeatImpute", "FeatImputeFeatures", "SHARED_INPUTS"]

SHARED_INPUTS = ("stacked", "per-modality")


class FeatImputeFeatures(NamedTuple):
    """Intermediate features of :class:`FeatImpute` (C = widths[-1]).

    Attributes:
        shared: [B, M, C], shared-encoder features; zero where the modality is absent.
        specific: [B, M, C], specific-encoder features; zero where the modality is absent.
        fused: [B, M, C], fused features, absent modalities imputed.
        available: bool [B, M].
    """

    shared: Tensor
    specific: Tensor
    fused: Tensor
    available: Tensor


class FeatImpute(nn.Module):
    """Shared/specific encoders, compositional fusion and feature imputation for absent modalities.

    Args:
        in_channels: M, the modalities; each is encoded on its own.
        num_classes: output classes.
        widths: conv block widths of each CBRTiny trunk.
        kernel_size: conv kernel side of each trunk.
        consistency_weight: weight of the L1 shared-feature consistency term in :meth:`auxiliary_loss`.
        domain_weight: weight of the modality (domain) cross-entropy in :meth:`auxiliary_loss`.
        shared_input: what the shared encoder reads, ``"stacked"`` or ``"per-modality"`` (see the module).

    ``forward(x: [B, M, H, W], available: bool [B, M]) -> logits [B, num_classes]``. Every sample
    needs at least one modality.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 5,
        consistency_weight: float = 0.1,
        domain_weight: float = 0.02,
        shared_input: str = "stacked",
    ):
        super().__init__()
        if shared_input not in SHARED_INPUTS:
            raise ValueError(f"shared_input must be one of {SHARED_INPUTS}, got {shared_input!r}")
        self.shared_input = shared_input
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.consistency_weight = float(consistency_weight)
        self.domain_weight = float(domain_weight)
        self.shared = CBRTrunk(in_channels if shared_input == "stacked" else 1, widths, kernel_size)
        self.specific = nn.ModuleList(CBRTrunk(1, widths, kernel_size) for _ in range(self.in_channels))
        self.widths, self.kernel_size = self.shared.widths, self.shared.kernel_size
        features = self.widths[-1]
        self.fusion = nn.Linear(2 * features, features)
        self.classifier = nn.Linear(self.in_channels * features, self.num_classes)
        self.domain_classifier = nn.Linear(features, self.in_channels)

    def encode(self, x: Tensor, available: Tensor) -> FeatImputeFeatures:
        """Shared, specific and fused (imputed) features of a batch; see :class:`FeatImputeFeatures`."""
        check_input(x, self.in_channels, len(self.widths), self.kernel_size)
        available = as_available(available, x)
        if not bool(available.any(1).all()):
            row = int((~available.any(1)).nonzero()[0])
            raise ValueError(f"available row {row} has no modality: FeatImpute needs at least one per sample")
        x = mask_missing(x, available)
        batch, modality = available.nonzero(as_tuple=True)  # the K present (sample, modality) pairs
        singles = x[batch, modality][:, None]  # [K, 1, H, W]
        shape = (x.shape[0], self.in_channels, self.widths[-1])
        if self.shared_input == "stacked":
            shared = x.new_zeros(shape).index_put((batch, modality), self.shared(x)[batch])
        else:
            shared = x.new_zeros(shape).index_put((batch, modality), self.shared(singles))
        specific = x.new_zeros(shape)
        for m, encoder in enumerate(self.specific):
            rows = (modality == m).nonzero()[:, 0]
            if rows.numel() > 0:
                specific = specific.index_put((batch[rows], modality[rows]), encoder(singles[rows]))
        fused = shared + self.fusion(torch.cat([shared, specific], dim=2))
        first = available.long().argmax(1)  # argmax returns the first maximum: the first available modality
        imputed = shared[torch.arange(x.shape[0], device=x.device), first]  # [B, C]
        fused = torch.where(available[:, :, None], fused, imputed[:, None, :])
        return FeatImputeFeatures(shared, specific, fused, available)

    def classify(self, features: FeatImputeFeatures) -> Tensor:
        """Logits [B, num_classes] from the concatenated fused features [B, M * C]."""
        return self.classifier(features.fused.flatten(1))

    def forward(self, x: Tensor, available: Tensor) -> Tensor:
        return self.classify(self.encode(x, available))

    def auxiliary_loss(self, features: FeatImputeFeatures) -> Tensor:
        """``consistency_weight * L_consistency + domain_weight * L_domain`` (a scalar).

        ``L_consistency`` is the mean over all (sample, i < j) with modalities i and j available of
        ``mean_c |shared[b, i, c] - shared[b, j, c]|`` (0 when no sample has two modalities);
        ``L_domain`` is the mean cross-entropy of ``domain_classifier(specific[b, m])`` against m
        over the available (b, m).
        """
        shared, specific, _, available = features
        i, j = torch.triu_indices(self.in_channels, self.in_channels, offset=1, device=shared.device)
        both = (available[:, i] & available[:, j]).to(shared.dtype)  # [B, pairs]
        distance = (shared[:, i] - shared[:, j]).abs().mean(-1)  # [B, pairs]
        consistency = (distance * both).sum() / both.sum().clamp(min=1)
        batch, modality = available.nonzero(as_tuple=True)
        domain = F.cross_entropy(self.domain_classifier(specific[batch, modality]), modality)
        return self.consistency_weight * consistency + self.domain_weight * domain
