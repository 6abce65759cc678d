"""Which samples, with which modalities, each training step sees.

A sampler is called once per iteration and returns ``(index [b], mu bool [b, M])``: the samples of
the batch and the pattern each is shown with. ``mu[k]`` is always a non-empty subset of
``available[index[k]]``, so a sample is only ever shown with modalities it really has. Batches
are drawn uniformly without replacement from the sampler's ``pool`` (the whole pool when it is
smaller than the batch size).

* :class:`CompleteSampler`: samples with all modalities, shown complete (the Standard baseline).
* :class:`PerSampleSampler`: every sample draws its own random non-empty pattern within its
  modalities at every step (channel dropout; HAM's ``mixed`` schedule).
* :class:`PatternSampler`: one random pattern for the whole batch, redrawn every ``n_it`` steps
  among the patterns at least one sample supports; the batch comes from the samples whose
  modalities include it (HAM's ``paper`` schedule with n_it = 10; FeatImpute with n_it = 1).
"""
from __future__ import annotations

import torch

from hamfast.patterns import all_patterns, is_subpattern, random_subpatterns

Tensor = torch.Tensor

__all__ = ["CompleteSampler", "PerSampleSampler", "PatternSampler", "make_sampler"]


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


class PerSampleSampler(_Sampler):
    """Batches of any samples, each shown with its own random non-empty subset of its modalities.

    Attributes:
        pool: int64 [n], the samples with at least one modality.
    """

    def __init__(self, available: Tensor, batch_size: int, generator: torch.Generator):
        super().__init__(available, batch_size, generator)
        self.pool = self.available.any(1).nonzero()[:, 0]
        if self.pool.numel() == 0:
            raise ValueError("no training sample has any modality")

    def __call__(self) -> tuple[Tensor, Tensor]:
        index = _draw(self.pool, self.batch_size, self.generator)
        return index, random_subpatterns(self.available[index], self.generator)


class PatternSampler(_Sampler):
    """One pattern per batch, redrawn every ``n_it`` calls.

    The pattern is uniform over the supported non-empty patterns (``patterns``: those contained in
    at least one sample's modalities); the batch is drawn from the samples that contain it and all
    are shown with exactly that pattern.

    Attributes:
        pool: int64 [n], the samples with at least one modality.
        patterns: bool [S, M], the supported patterns.
        pattern: bool [M], the current pattern (None before the first call).
    """

    def __init__(self, available: Tensor, batch_size: int, generator: torch.Generator, n_it: int = 10):
        super().__init__(available, batch_size, generator)
        if n_it < 1:
            raise ValueError(f"n_it must be >= 1, got {n_it}")
        self.n_it = int(n_it)
        candidates = all_patterns(self.available.shape[1])  # [15, M]
        self._supports = is_subpattern(candidates[:, None, :], self.available[None, :, :])  # [15, N]
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
    method: str, schedule: str, available: Tensor, batch_size: int, n_it: int, generator: torch.Generator
) -> _Sampler:
    """The sampler of a method: standard -> complete, dropout -> per sample, featimpute -> one
    pattern per batch, ham -> one pattern per ``n_it`` batches (``schedule="paper"``) or per
    sample (``schedule="mixed"``)."""
    if method == "standard":
        return CompleteSampler(available, batch_size, generator)
    if method == "dropout":
        return PerSampleSampler(available, batch_size, generator)
    if method == "featimpute":
        return PatternSampler(available, batch_size, generator, n_it=1)
    if method == "ham":
        if schedule == "paper":
            return PatternSampler(available, batch_size, generator, n_it=n_it)
        if schedule == "mixed":
            return PerSampleSampler(available, batch_size, generator)
        raise ValueError(f"schedule must be 'paper' or 'mixed', got {schedule!r}")
    raise ValueError(f"unknown method {method!r}")
