"""Recompute HAM's per-pattern batch-norm statistics with the current weights ("precise BN").

A pattern's running statistics only move while that pattern is trained (in the paper schedule for
``n_it`` steps at a time, 1/15 of the time on average), but its weights keep changing whenever h
is trained on any other pattern. At the end of a run the stored statistics of a pattern can be far
from those of its current task model, and evaluation, which uses them, suffers: on the synthetic
cohort a HAM trained for 300 steps classified complete test data at chance with its running
statistics and at 0.6-0.8 balanced accuracy with recomputed ones. Recomputing them once with the
final weights (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm": precise BN) fixes this; it
changes no parameter and does not touch training, which normalises with batch statistics.
"""
from __future__ import annotations

import math

import torch

from hamfast.models import HAM
from hamfast.patterns import all_patterns, is_subpattern, pattern_code

Tensor = torch.Tensor

__all__ = ["recalibrate_pattern_norms"]


@torch.no_grad()
def recalibrate_pattern_norms(
    model: HAM, images: Tensor, available: Tensor, *, batch_size: int = 64, max_per_pattern: int = 64
) -> list[int]:
    """Replace the running statistics of every pattern the data supports by precise ones.

    For each pattern mu that some sample has (``available[i]`` contains mu), up to
    ``max_per_pattern`` such samples (evenly spaced over their index order), masked to mu, run
    through the model in training mode, in near-equal batches of at most ``batch_size``; the
    pattern's running mean and variance become the average of these batches' statistics. Patterns
    no sample has keep their statistics. The cost is about ``15 * max_per_pattern`` forward passes
    of one sample.

    Args:
        model: the HAM to update (its mode and batch-norm momentum are restored afterwards).
        images: float [N, M, H, W], on any device (batches are moved to the model's).
        available: bool [N, M], what each sample really has.
        batch_size: samples per forward pass.
        max_per_pattern: cap on the samples used per pattern.

    Returns:
        The pattern codes that were recomputed.
    """
    if batch_size < 1 or max_per_pattern < 1:
        raise ValueError(f"batch_size and max_per_pattern must be >= 1, got {batch_size} and {max_per_pattern}")
    device = model.hypernet.out.weight.device
    available = torch.as_tensor(available).bool().cpu()
    was_training, momenta = model.training, [norm.momentum for norm in model.norms]
    model.train()
    recomputed = []
    try:
        for norm in model.norms:
            norm.momentum = None  # cumulative average over the batches below
        for mu in all_patterns(model.in_channels):
            members = is_subpattern(mu, available).nonzero()[:, 0]
            if members.numel() == 0:
                continue
            if members.numel() > max_per_pattern:
                members = members[torch.linspace(0, members.numel() - 1, max_per_pattern).round().long()]
            code = pattern_code(mu)
            for norm in model.norms:
                norm.reset_running_stats(code[None].to(device))
            for index in members.tensor_split(math.ceil(members.numel() / batch_size)):
                x = images[index.to(images.device)].to(device)
                model(x, mu.expand(index.numel(), -1).to(device))
            recomputed.append(int(code))
    finally:
        for norm, momentum in zip(model.norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return recomputed
