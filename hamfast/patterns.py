"""Modality patterns: the binary vector mu and its 4-bit code.

A pattern mu says which of a dataset's M input modalities are present: ``mu[i] = 1`` when modality
i (in the dataset's channel order; BraTS: t1, t1ce, t2, flair) is available. Its code is the integer
``sum_i mu[i] * 2**i`` (modality 0 is bit 0), so the codes run over 0..2**M - 1, 0 being the empty
pattern and 2**M - 1 the complete one (15 for BraTS). HAM keeps per-pattern state (batch-norm
running statistics) in slots indexed by this code.

This module has no monai/nibabel dependency.
"""
from __future__ import annotations

import torch

from hamfast.names import BRATS_MODALITIES

Tensor = torch.Tensor

# BraTS's modalities: the defaults of functions that take a dataset's M or names.
NAMES = BRATS_MODALITIES
NUM_MODALITIES = len(NAMES)
NUM_CODES = 2**NUM_MODALITIES

__all__ = [
    "NUM_MODALITIES",
    "NUM_CODES",
    "NAMES",
    "pattern_code",
    "code_to_mu",
    "all_patterns",
    "pattern_name",
    "is_subpattern",
    "random_subpatterns",
]


def _bit_values(num_modalities: int, device) -> Tensor:
    return 2 ** torch.arange(num_modalities, device=device, dtype=torch.long)


def pattern_code(mu: Tensor) -> Tensor:
    """The code of each pattern.

    Args:
        mu: bool or 0/1 tensor [..., M].

    Returns:
        int64 [...], ``sum_i mu[..., i] * 2**i``.
    """
    mu = torch.as_tensor(mu)
    return (mu.long() * _bit_values(mu.shape[-1], mu.device)).sum(-1)


def code_to_mu(code, num_modalities: int = NUM_MODALITIES) -> Tensor:
    """The pattern of each code: bool [..., M] from int [...]."""
    code = torch.as_tensor(code, dtype=torch.long)
    return (code.unsqueeze(-1) & _bit_values(num_modalities, code.device)) != 0


def all_patterns(num_modalities: int = NUM_MODALITIES) -> Tensor:
    """The ``2**M - 1`` non-empty patterns, bool [2**M - 1, M], in code order 1, 2, ..."""
    return code_to_mu(torch.arange(1, 2**num_modalities), num_modalities)


def pattern_name(code: int, names=NAMES) -> str:
    """A readable name, e.g. ``pattern_name(5) == "t1+t2"``; ``"none"`` for code 0."""
    present = [name for i, name in enumerate(names) if (int(code) >> i) & 1]
    return "+".join(present) if present else "none"


def is_subpattern(mu: Tensor, available: Tensor) -> Tensor:
    """Whether each pattern ``mu`` [..., M] only uses modalities in ``available`` [..., M] -> bool [...]."""
    return ~(torch.as_tensor(mu).bool() & ~torch.as_tensor(available).bool()).any(-1)


def random_subpatterns(available: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw, for every row, a non-empty pattern uniformly among the subsets of its available modalities.

    Args:
        available: bool [B, M]; every row needs at least one True.
        generator: the random source (CPU generator).

    Returns:
        bool [B, M], ``out[b]`` a uniformly random non-empty subset of ``available[b]``.
    """
    available = torch.as_tensor(available).bool()
    if available.dim() != 2:
        raise ValueError(f"available must be a bool tensor [B, M], got shape {tuple(available.shape)}")
    if not available.any(1).all():
        row = int((~available.any(1)).nonzero()[0])
        raise ValueError(f"available row {row} has no modality; cannot draw a non-empty pattern from it")
    num_modalities = available.shape[1]
    table, counts = _subset_table(num_modalities)
    avail_code = pattern_code(available)
    pick = (torch.rand(avail_code.shape, generator=generator) * counts[avail_code]).long()
    pick = torch.minimum(pick, counts[avail_code] - 1)  # guards the float edge u * n == n
    return code_to_mu(table[avail_code, pick], num_modalities)


def _subset_table(num_modalities: int) -> tuple[Tensor, Tensor]:
    """``table[c, :counts[c]]``: the non-empty subsets of code c (int64 [2**M, 2**M - 1], padded with 0)."""
    codes = torch.arange(2**num_modalities)
    is_subset = ((codes[None, :] & ~codes[:, None]) == 0) & (codes[None, :] != 0)  # [c, s]
    counts = is_subset.sum(1)
    # Stable sort puts each row's subsets first, in increasing code order.
    order = torch.argsort((~is_subset).long(), dim=1, stable=True)[:, : 2**num_modalities - 1]
    table = torch.where(torch.arange(2**num_modalities - 1)[None, :] < counts[:, None], codes[order], 0)
    return table, counts
