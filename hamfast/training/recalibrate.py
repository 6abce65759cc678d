"""Recompute HAM's per-pattern batch-norm statistics with the current weights ("precise BN").

A pattern's running statistics only move while that pattern is trained (in the paper schedule for
``n_it`` steps at a time, 1/15 of the time on average), but its weights keep changing whenever h
is trained on any other pattern. At the end of a run the stored statistics of a pattern can be far
from those of its current task model, and evaluation, which uses them, suffers: on the synthetic
cohort a HAM trained for 300 steps classified complete test data at chance with its running
statistics and at 0.6-0.8 balanced accuracy with recomputed ones. Recomputing them once with the
final weights (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm": precise BN) fixes this; it
changes no parameter and does not touch training, which normalises with batch statistics.

The baselines get the same treatment, so that a comparison is not won by normalisation:
:func:`recalibrated_copy` gives a copy of a CBRTiny (Standard, Dropout) or FeatImpute whose
batch-norm statistics are recomputed on the training samples as the *test* pattern shows them
(the samples that have every modality of the pattern, masked to it, the same samples and count
HAM's pattern gets), and :func:`hamfast.training.predict_proba` with ``calibration=`` predicts
each test pattern with such a copy. A HAM with ``norm="shared"`` has one slot for all patterns;
its precise statistics average the batches of every supported pattern (each batch one pattern,
as the paper's schedule trains it).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from hamfast.models import HAM
from hamfast.patterns import all_patterns, is_subpattern, pattern_code

Tensor = torch.Tensor

__all__ = ["recalibrate_pattern_norms", "recalibrated_copy", "calibration_members"]


def calibration_members(mu: Tensor, available: Tensor, max_per_pattern: int) -> Tensor:
    """int64 [n]: up to ``max_per_pattern`` samples whose ``available`` [N, M] contains ``mu`` [M],
    evenly spaced over their index order (empty when none has it)."""
    members = is_subpattern(mu, available).nonzero()[:, 0]
    if members.numel() > max_per_pattern:
        members = members[torch.linspace(0, members.numel() - 1, max_per_pattern).round().long()]
    return members


@torch.no_grad()
def recalibrated_copy(
    model: nn.Module, images: Tensor, available: Tensor, mu: Tensor, *, batch_size: int = 64, max_per_pattern: int = 64
) -> nn.Module:
    """A copy of ``model`` (CBRTiny, FeatImpute: any model with ``nn.BatchNorm2d`` layers) whose
    batch-norm running statistics are the precise statistics of the training samples shown with
    pattern ``mu``.

    Args:
        model: the trained model (not changed).
        images: float [N, M, H, W], the training samples; available: bool [N, M], what each has
            (the training mask: a modality hidden by the simulated missingness is not used).
        mu: bool [M], the test pattern.
        batch_size, max_per_pattern: as in :func:`recalibrate_pattern_norms`.

    Returns:
        The copy in eval mode; ``model`` itself when no training sample has ``mu`` (the statistics
        cannot be recomputed, the trained ones are kept) or the model has no batch norm.
    """
    available = torch.as_tensor(available).bool().cpu()
    mu = torch.as_tensor(mu).bool().cpu()
    members = calibration_members(mu, available, max_per_pattern)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if members.numel() == 0 or not norms:
        return model
    out = copy.deepcopy(model)
    device = next(out.parameters()).device
    norms = [m for m in out.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    out.train()
    for index in members.tensor_split(math.ceil(members.numel() / batch_size)):
        x = images[index.to(images.device)].to(device)
        out(x, mu.expand(index.numel(), -1).to(device))
    for norm, original in zip(norms, [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]):
        norm.momentum = original.momentum
    return out.eval()


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
    of one sample. A HAM with shared batch norm (``norm="shared"``) has one slot: it becomes the
    average over the batches of every supported pattern.

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
    shared = model.norm == "shared"
    try:
        for norm in model.norms:
            norm.momentum = None  # cumulative average over the batches below
            if shared:
                norm.reset_running_stats()
        for mu in all_patterns(model.in_channels):
            members = calibration_members(mu, available, max_per_pattern)
            if members.numel() == 0:
                continue
            code = pattern_code(mu)
            if not shared:
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
