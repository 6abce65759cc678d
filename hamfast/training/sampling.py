"""Which samples, with which modalities, each training step sees.

A sampler is called once per iteration and returns ``(index [b], mu bool [b, M])``: the samples of
the batch and the pattern each is shown with. ``mu[k]`` is always a non-empty subset of
``available[index[k]]``, so a sample is only ever shown with modalities it really has. Batches
are drawn uniformly without replacement from the sampler's ``pool`` (the whole pool when it is
smaller than the batch size).

* :class:`CompleteSampler`: samples with all modalities, shown complete (the Standard baseline).
* :class:`PerSampleSampler`: random non-empty patterns within the samples' modalities, redrawn at
  every step, by one *masking distribution* shared by Dropout and HAM's ``mixed`` schedule
  (:data:`DROPOUT_MODES`): ``"channel"``, each present modality dropped independently with
  probability ``p`` (redrawn while nothing is left; ``p = 0.5`` makes every non-empty subset of a
  sample's modalities equally likely); ``"subset"``, uniform over the non-empty subsets. In both,
  with probability ``keep`` the sample keeps its own pattern untouched. With ``groups = 0`` every
  sample draws its own pattern (Dropout); with ``groups = G`` the batch is G pattern groups of
  equal size: each group's pattern is the masking distribution's draw for one random sample (its
  anchor), and the group is filled with samples that have every modality of it (HAM's ``mixed``
  schedule, so that per-pattern batch norm never sees a group of one).
* :class:`PatternSampler`: one random pattern for the whole batch, redrawn every ``n_it`` steps
  among the patterns at least one sample supports; the batch comes from the samples whose
  modalities include it (HAM's ``paper`` schedule with n_it = 10; FeatImpute with n_it = 1). With
  ``exact=True`` only the samples whose own pattern *is* the drawn one are used, and only such
  patterns are drawn (HAM's ``paper-exact`` schedule, the other reading of the paper).
"""
from __future__ import annotations

import torch

from hamfast.patterns import all_patterns, is_subpattern, random_subpatterns

Tensor = torch.Tensor

__all__ = ["DROPOUT_MODES", "CompleteSampler", "PerSampleSampler", "PatternSampler", "make_sampler", "channel_dropout"]

DROPOUT_MODES = ("subset", "channel")


def _draw(pool: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    return pool[torch.randperm(pool.numel(), generator=generator)[:batch_size]]


class _Sampler:
    """Common state: ``available`` bool [N, M], the batch size and the random generator."""

    def __init__(self, available: Tensor, batch_size: int, generator: torch.Generator):
        available = torch.as_tensor(available).bool().cpu()
        if available.dim() != 2:
            raise ValueError(f"available must be bool [N, M], got shape {tuple(available.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.available = available
        self.batch_size = int(batch_size)
        self.generator = generator


class CompleteSampler(_Sampler):
    """Batches of complete samples (all modalities), shown complete.

    Attributes:
        pool: int64 [n], the samples with every modality.
    """

    def __init__(self, available: Tensor, batch_size: int, generator: torch.Generator):
        super().__init__(available, batch_size, generator)
        self.pool = self.available.all(1).nonzero()[:, 0]
        if self.pool.numel() == 0:
            raise ValueError("no training sample has all modalities; the standard baseline cannot train")

    def __call__(self) -> tuple[Tensor, Tensor]:
        index = _draw(self.pool, self.batch_size, self.generator)
        return index, self.available[index]


def channel_dropout(available: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Drop each present modality independently with probability ``p``; rows left empty are redrawn.

    Args:
        available: bool [B, M], every row non-empty.
        p: drop probability per present modality, in [0, 1).
        generator: CPU generator.

    Returns:
        bool [B, M]: a non-empty subset of each row, distributed as independent drops conditioned
        on keeping at least one modality.
    """
    out = available.clone()
    redraw = torch.ones(available.shape[0], dtype=torch.bool)
    while bool(redraw.any()):
        rows = redraw.nonzero()[:, 0]
        keep = torch.rand((rows.numel(), available.shape[1]), generator=generator) >= p
        out[rows] = available[rows] & keep
        redraw = torch.zeros_like(redraw)
        redraw[rows] = ~out[rows].any(1)
    return out


class PerSampleSampler(_Sampler):
    """Batches of any samples, shown with random non-empty subsets of their modalities.

    Args:
        available, batch_size, generator: see the module.
        mode: the masking distribution, ``"subset"`` (uniform over the non-empty subsets) or
            ``"channel"`` (each present modality dropped with probability ``p``).
        p: the per-modality drop probability of ``"channel"``, in [0, 1).
        keep: probability that a sample keeps its own (training) pattern untouched, in [0, 1].
        groups: 0: every sample draws its own pattern. G >= 1: G pattern groups per batch, of
            ``batch_size // G`` samples each (the first ``batch_size % G`` groups one more); a
            group's pattern is the masking distribution's draw for a random anchor sample, its
            members are drawn without replacement among the samples that have that pattern's
            modalities (all of them when fewer). At most ``batch_size`` groups are made.

    Attributes:
        pool: int64 [n], the samples with at least one modality.
    """

    def __init__(
        self, available: Tensor, batch_size: int, generator: torch.Generator, mode: str = "subset", p: float = 0.5,
        keep: float = 0.0, groups: int = 0,
    ):
        super().__init__(available, batch_size, generator)
        if groups < 0:
            raise ValueError(f"pattern groups per batch must be >= 0, got {groups}")
        self.groups = min(int(groups), self.batch_size)
        if mode not in DROPOUT_MODES:
            raise ValueError(f"dropout mode must be one of {DROPOUT_MODES}, got {mode!r}")
        if not 0 <= p < 1:
            raise ValueError(f"dropout p (drop probability per modality) must lie in [0, 1), got {p}")
        if not 0 <= keep <= 1:
            raise ValueError(f"dropout keep (probability of keeping a sample's own pattern) must lie in [0, 1], got {keep}")
        self.mode, self.p, self.keep = mode, float(p), float(keep)
        self.pool = self.available.any(1).nonzero()[:, 0]
        if self.pool.numel() == 0:
            raise ValueError("no training sample has any modality")

    def mask(self, own: Tensor) -> Tensor:
        """The masking distribution: a random non-empty subset of each row of ``own`` bool [b, M]."""
        if self.mode == "subset":
            mu = random_subpatterns(own, self.generator)
        else:
            mu = channel_dropout(own, self.p, self.generator)
        if self.keep > 0:
            kept = torch.rand(own.shape[0], generator=self.generator) < self.keep
            mu = torch.where(kept[:, None], own, mu)
        return mu

    def __call__(self) -> tuple[Tensor, Tensor]:
        if self.groups == 0:
            index = _draw(self.pool, self.batch_size, self.generator)
            return index, self.mask(self.available[index])
        anchors = self.pool[torch.randint(self.pool.numel(), (self.groups,), generator=self.generator)]
        patterns = self.mask(self.available[anchors])  # [G, M]
        sizes = [self.batch_size // self.groups + (g < self.batch_size % self.groups) for g in range(self.groups)]
        indices, mus = [], []
        for mu, size in zip(patterns, sizes):
            members = self.pool[is_subpattern(mu, self.available[self.pool])]
            index = _draw(members, size, self.generator)
            indices.append(index)
            mus.append(mu.expand(index.numel(), -1))
        return torch.cat(indices), torch.cat(mus)


class PatternSampler(_Sampler):
    """One pattern per batch, redrawn every ``n_it`` calls.

    The pattern is uniform over the supported non-empty patterns (``patterns``: those contained in
    at least one sample's modalities); the batch is drawn from the samples that contain it and all
    are shown with exactly that pattern.

    Attributes:
        pool: int64 [n], the samples with at least one modality.
        patterns: bool [S, M], the supported patterns (``exact``: the samples' own patterns).
        pattern: bool [M], the current pattern (None before the first call).
    """

    def __init__(self, available: Tensor, batch_size: int, generator: torch.Generator, n_it: int = 10, exact: bool = False):
        super().__init__(available, batch_size, generator)
        if n_it < 1:
            raise ValueError(f"n_it must be >= 1, got {n_it}")
        self.n_it = int(n_it)
        self.exact = bool(exact)
        candidates = all_patterns(self.available.shape[1])  # [2**M - 1, M]
        if self.exact:
            self._supports = (candidates[:, None, :] == self.available[None, :, :]).all(-1)  # [2**M - 1, N]
        else:
            self._supports = is_subpattern(candidates[:, None, :], self.available[None, :, :])
        supported = self._supports.any(1)
        self.patterns = candidates[supported]
        self._supports = self._supports[supported]
        if self.patterns.shape[0] == 0:
            raise ValueError("no training sample has any modality")
        self.pool = self.available.any(1).nonzero()[:, 0]
        self.pattern = None
        self._calls = 0
        self._members = None

    def __call__(self) -> tuple[Tensor, Tensor]:
        if self._calls % self.n_it == 0:
            choice = int(torch.randint(self.patterns.shape[0], (1,), generator=self.generator))
            self.pattern = self.patterns[choice]
            self._members = self._supports[choice].nonzero()[:, 0]
        self._calls += 1
        index = _draw(self._members, self.batch_size, self.generator)
        return index, self.pattern.expand(index.numel(), -1).clone()


def make_sampler(
    method: str,
    schedule: str,
    available: Tensor,
    batch_size: int,
    n_it: int,
    generator: torch.Generator,
    *,
    dropout_mode: str = "channel",
    dropout_p: float = 0.5,
    dropout_keep: float = 0.0,
    mixed_groups: int = 4,
) -> _Sampler:
    """The sampler of a method: standard -> complete; dropout -> per sample with the masking
    distribution ``dropout_mode`` / ``dropout_p`` / ``dropout_keep`` (see :class:`PerSampleSampler`);
    featimpute -> one pattern per batch; ham -> one pattern per ``n_it`` batches from the samples
    that have it (``schedule="paper"``) or whose own pattern it is (``"paper-exact"``), or
    (``"mixed"``) ``mixed_groups`` pattern groups per batch drawn by the same masking
    distribution as Dropout (0: a pattern per sample)."""
    if method == "standard":
        return CompleteSampler(available, batch_size, generator)
    masking = dict(mode=dropout_mode, p=dropout_p, keep=dropout_keep)
    if method == "dropout":
        return PerSampleSampler(available, batch_size, generator, **masking)
    if method == "featimpute":
        return PatternSampler(available, batch_size, generator, n_it=1)
    if method == "ham":
        if schedule in ("paper", "paper-exact"):
            return PatternSampler(available, batch_size, generator, n_it=n_it, exact=schedule == "paper-exact")
        if schedule == "mixed":
            return PerSampleSampler(available, batch_size, generator, groups=mixed_groups, **masking)
        raise ValueError(f"schedule must be 'paper', 'paper-exact' or 'mixed', got {schedule!r}")
    raise ValueError(f"unknown method {method!r}")
