"""Batch normalisation per modality pattern, for a batch that mixes patterns.

In HAM every pattern mu has its own task model, hence its own BatchNorm layers: in training a
sample is normalised with the statistics of the samples that share its pattern, and each pattern
keeps its own running statistics for evaluation. :class:`PatternBatchNorm` does this for a whole
mixed batch at once, with the affine parameters supplied per group (HAM generates them).

``shared=True`` is the ablation closest to the paper's text, where each task model is a plain
CBRTiny whose batch norm keeps one set of running statistics: the whole batch is normalised with
its own statistics (whatever its patterns) and one running-statistics slot serves every pattern.
With the paper's schedule (one pattern per batch) training is the same in both modes; they differ
in the statistics used at evaluation.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from hamfast.ops import GroupPlan

Tensor = torch.Tensor

__all__ = ["PatternBatchNorm"]


def _group_sum(per_sample: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Segment sum: rows of ``per_sample`` [B, C] added up per group -> [G, C]."""
    return per_sample.new_zeros((num_groups,) + per_sample.shape[1:]).index_add(0, group, per_sample)


class PatternBatchNorm(nn.Module):
    """BatchNorm2d with per-pattern running statistics and per-group affine parameters.

    For group g (samples ``S_g``, all with pattern slot ``slots[g]``) and channel c::

        y[b, c] = (x[b, c] - mean[g, c]) / sqrt(var[g, c] + eps) * weight[g, c] + bias[g, c]

    In training, ``mean[g]`` and the biased ``var[g]`` are taken over ``S_g`` and all spatial
    positions, exactly what ``F.batch_norm`` computes on the group alone. They come from per-sample
    moments combined by segment sums (``n`` = H * W positions per sample, ``|S_g|`` samples)::

        mean[g] = sum_{b in S_g} m_b / |S_g|
        var[g]  = sum_{b in S_g} (v_b + (m_b - mean[g])**2) / |S_g|

    with ``m_b``, ``v_b`` the mean and biased variance of sample b, so no loop over groups runs.
    The running statistics of slot ``slots[g]`` move by ``momentum`` towards ``mean[g]`` and the
    unbiased variance ``var[g] * N / (N - 1)``, ``N = |S_g| * n`` (as ``nn.BatchNorm2d`` does);
    with ``momentum=None`` they are the plain average over the slot's batches so far (used to
    recompute them, see :meth:`reset_running_stats`). In evaluation the slot's running statistics
    are used.

    With ``shared=True`` every group uses the statistics of the whole batch in training and
    running slot 0 in evaluation (``slots`` are ignored): one batch norm for every pattern.

    Args:
        num_features: C, the channels.
        num_slots: how many patterns keep running statistics (16 for the 4-bit codes of 4 modalities).
        shared: one set of statistics for all patterns (see above).
        eps: added to the variance.
        momentum: running-statistics update factor; None for a cumulative average.

    Buffers: ``running_mean`` [num_slots, C] (zeros), ``running_var`` [num_slots, C] (ones),
    ``num_batches_tracked`` int64 [num_slots].
    """

    def __init__(
        self, num_features: int, num_slots: int = 16, eps: float = 1e-5, momentum: Optional[float] = 0.1, shared: bool = False
    ):
        super().__init__()
        self.shared = bool(shared)
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.num_features = int(num_features)
        self.num_slots = int(num_slots)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.register_buffer("running_mean", torch.zeros(num_slots, num_features))
        self.register_buffer("running_var", torch.ones(num_slots, num_features))
        self.register_buffer("num_batches_tracked", torch.zeros(num_slots, dtype=torch.long))

    def forward(self, x: Tensor, plan: GroupPlan, slots: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Normalise every sample with its group's statistics.

        Args:
            x: [B, C, H, W].
            plan: the batch's groups (``plan.group`` [B] in ``[0, G)``).
            slots: int64 [G], the distinct running-statistics slot of each group (its pattern code).
            weight: [G, C], the scale of each group.
            bias: [G, C], the shift of each group.

        Returns:
            [B, C, H, W].
        """
        num_groups = plan.num_groups
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"x must be [B, {self.num_features}, H, W], got {tuple(x.shape)}")
        for name, t in (("weight", weight), ("bias", bias)):
            if tuple(t.shape) != (num_groups, self.num_features):
                raise ValueError(f"{name} must be [G, C] = {(num_groups, self.num_features)}, got {tuple(t.shape)}")
        if slots.shape != (num_groups,):
            raise ValueError(f"slots must be [G] = [{num_groups}], got {tuple(slots.shape)}")
        group = plan.group
        if self.shared:
            zero = slots.new_zeros(1)
            if self.training:
                var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
                values = torch.full((1,), x.shape[0] * x.shape[2] * x.shape[3], device=x.device)
                self._update_running(zero, mean.detach()[None], var.detach()[None], values)
                mean, var = mean[None].expand(num_groups, -1), var[None].expand(num_groups, -1)
            else:
                mean, var = self.running_mean[zero].expand(num_groups, -1), self.running_var[zero].expand(num_groups, -1)
        elif self.training:
            mean, var = self._batch_stats(x, plan)
            self._update_running(slots, mean.detach(), var.detach(), plan.counts() * x.shape[2] * x.shape[3])
        else:
            mean, var = self.running_mean[slots], self.running_var[slots]
        scale = weight * torch.rsqrt(var + self.eps)  # [G, C]
        shift = bias - mean * scale
        return x * scale[group][:, :, None, None] + shift[group][:, :, None, None]

    def _batch_stats(self, x: Tensor, plan: GroupPlan) -> tuple[Tensor, Tensor]:
        """Per-group mean and biased variance, [G, C] each."""
        positions = x.shape[2] * x.shape[3]
        counts = plan.counts()
        if positions == 1 and bool((counts == 1).any()):
            raise ValueError(
                "a pattern group has a single value per channel (one sample of 1x1 spatial size): "
                "batch statistics are undefined in training mode"
            )
        num_groups, group = plan.num_groups, plan.group
        # Two passes by hand: as stable as torch.var_mean and, on CPU, about twice as fast with backward.
        mean_b = x.mean((2, 3), keepdim=True)
        var_b = (x - mean_b).square().mean((2, 3))  # [B, C]
        mean_b = mean_b[:, :, 0, 0]
        n = counts.clamp(min=1).to(x.dtype)[:, None]
        mean = _group_sum(mean_b, group, num_groups) / n
        spread = var_b + (mean_b - mean[group]) ** 2
        return mean, _group_sum(spread, group, num_groups) / n

    @torch.no_grad()
    def _update_running(self, slots: Tensor, mean: Tensor, var: Tensor, values: Tensor) -> None:
        """Move the slots' running statistics towards this batch's (``values`` [G]: N per group).

        Empty groups leave their slot unchanged (a zero step instead of boolean indexing, so no
        device sync).
        """
        present = values > 0
        unbiased = var * (values / (values - 1).clamp(min=1)).to(var.dtype)[:, None]
        if self.momentum is None:  # cumulative average: the k-th batch of a slot weighs 1/k
            step = present / (self.num_batches_tracked[slots] + present).clamp(min=1)
        else:
            step = self.momentum * present
        step = step.to(mean.dtype)[:, None]
        self.running_mean[slots] = (1 - step) * self.running_mean[slots] + step * mean
        self.running_var[slots] = (1 - step) * self.running_var[slots] + step * unbiased
        self.num_batches_tracked[slots] += present.long()

    @torch.no_grad()
    def reset_running_stats(self, slots: Optional[Tensor] = None) -> None:
        """Running mean 0, variance 1 and no batches tracked, for ``slots`` (int64 [S]) or all slots."""
        index = slice(None) if slots is None else slots
        self.running_mean[index] = 0
        self.running_var[index] = 1
        self.num_batches_tracked[index] = 0

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_slots={self.num_slots}, eps={self.eps}, momentum={self.momentum}, shared={self.shared}"
