"""Patterns and the per-step batch/pattern samplers: a sample only ever shows modalities it has."""
import pytest
import torch

from hamfast.patterns import all_patterns, code_to_mu, is_subpattern, pattern_code, pattern_name, random_subpatterns
from hamfast.training.sampling import (
    CompleteSampler,
    PatternSampler,
    PerSampleSampler,
    make_sampler,
)


def _available():
    # 6 complete, 5 t1+t2, 4 flair only, 3 t1ce+t2+flair
    rows = [[1, 1, 1, 1]] * 6 + [[1, 0, 1, 0]] * 5 + [[0, 0, 0, 1]] * 4 + [[0, 1, 1, 1]] * 3
    return torch.tensor(rows, dtype=torch.bool)


def test_codes_round_trip_and_names():
    mu = all_patterns()
    assert mu.shape == (15, 4) and not (~mu).all(1).any()
    assert pattern_code(mu).tolist() == list(range(1, 16))
    assert torch.equal(code_to_mu(pattern_code(mu)), mu)
    assert pattern_code(torch.tensor([1, 0, 1, 0])) == 5  # t1 is bit 0, t2 bit 2
    assert pattern_name(5) == "t1+t2" and pattern_name(15) == "t1+t1ce+t2+flair" and pattern_name(0) == "none"


def test_random_subpatterns_are_uniform_nonempty_subsets():
    gen = torch.Generator().manual_seed(0)
    available = torch.tensor([[1, 0, 1, 0]] * 3000 + [[0, 0, 0, 1]] * 10, dtype=torch.bool)
    mu = random_subpatterns(available, gen)
    assert is_subpattern(mu, available).all() and mu.any(1).all()
    counts = torch.bincount(pattern_code(mu[:3000]), minlength=16).float() / 3000
    for code in (1, 4, 5):  # t1, t2, t1+t2: a third each
        assert abs(counts[code] - 1 / 3) < 0.04
    assert (pattern_code(mu[3000:]) == 8).all()
    with pytest.raises(ValueError, match="row 1 has no modality"):
        random_subpatterns(torch.tensor([[1, 0], [0, 0]], dtype=torch.bool), gen)


def test_complete_sampler():
    gen = torch.Generator().manual_seed(0)
    sampler = CompleteSampler(_available(), 4, gen)
    assert sampler.pool.tolist() == list(range(6))
    for _ in range(5):
        index, mu = sampler()
        assert index.numel() == 4 and index.unique().numel() == 4 and (index < 6).all() and mu.all()
    with pytest.raises(ValueError, match="no training sample has all modalities"):
        CompleteSampler(_available()[6:], 4, gen)


def test_per_sample_sampler_masks_within_available():
    available = _available()
    sampler = PerSampleSampler(available, 8, torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(30):
        index, mu = sampler()
        assert index.unique().numel() == 8
        assert is_subpattern(mu, available[index]).all() and mu.any(1).all()
        seen.update(pattern_code(mu).tolist())
    assert len(seen) > 8  # many different patterns, mixed within batches


def test_pattern_sampler_holds_a_supported_pattern_for_n_it_steps():
    available = _available()[6:]  # no complete sample: t1+t1ce is never supported
    sampler = PatternSampler(available, 4, torch.Generator().manual_seed(0), n_it=3)
    # supported: subsets of t1+t2 (3), of flair (1), of t1ce+t2+flair (7), with t2 and flair counted once
    supported = set(pattern_code(sampler.patterns).tolist())
    assert supported == {1, 4, 5, 8, 2, 6, 10, 12, 14}
    patterns = []
    for step in range(30):
        index, mu = sampler()
        assert (mu == mu[0]).all()  # one pattern per batch
        assert is_subpattern(mu, available[index]).all()
        patterns.append(int(pattern_code(mu[0])))
    for start in range(0, 30, 3):
        assert len(set(patterns[start : start + 3])) == 1
    assert len(set(patterns)) > 3


def test_make_sampler_per_method():
    gen = torch.Generator().manual_seed(0)
    a = _available()
    assert type(make_sampler("standard", "paper", a, 4, 10, gen)) is CompleteSampler
    assert type(make_sampler("dropout", "paper", a, 4, 10, gen)) is PerSampleSampler
    assert make_sampler("featimpute", "paper", a, 4, 10, gen).n_it == 1
    assert make_sampler("ham", "paper", a, 4, 10, gen).n_it == 10
    assert type(make_sampler("ham", "mixed", a, 4, 10, gen)) is PerSampleSampler
    with pytest.raises(ValueError, match="schedule"):
        make_sampler("ham", "random", a, 4, 10, gen)
