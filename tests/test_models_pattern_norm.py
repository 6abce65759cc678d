"""PatternBatchNorm against F.batch_norm applied to each pattern group on its own."""
import pytest
import torch
import torch.nn.functional as F

from hamfast.models import PatternBatchNorm
from hamfast.ops import make_group_plan


def _setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    group = torch.tensor([2, 0, 1, 2, 0, 2, 1])  # unsorted, group 1 has 2 samples, group 2 has 3
    slots = torch.tensor([3, 9, 15])  # pattern codes of groups 0, 1, 2
    x = torch.randn(7, 5, 6, 4, generator=gen, dtype=torch.float64) * 3 + 1.5
    weight = torch.rand(3, 5, generator=gen, dtype=torch.float64) + 0.5
    bias = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    return x, group, slots, weight, bias


def _per_group_reference(x, group, weight, bias, running_mean, running_var, training):
    out = torch.empty_like(x)
    for g in range(weight.shape[0]):
        idx = (group == g).nonzero()[:, 0]
        out[idx] = F.batch_norm(
            x[idx], running_mean[g], running_var[g], weight[g], bias[g], training=training, momentum=0.1, eps=1e-5
        )
    return out


def test_training_matches_batch_norm_per_group_values_grads_and_running_stats():
    x, group, slots, weight, bias = _setup()
    norm = PatternBatchNorm(5, num_slots=16).double().train()
    xs = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    out = norm(xs[0], make_group_plan(group, 3), slots, xs[1], xs[2])

    refs = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    ref_mean = torch.zeros(3, 5, dtype=torch.float64)
    ref_var = torch.ones(3, 5, dtype=torch.float64)
    ref = _per_group_reference(refs[0], group, refs[1], refs[2], ref_mean, ref_var, training=True)
    torch.testing.assert_close(out, ref)

    probe = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((out * probe).sum(), xs)
    ref_grads = torch.autograd.grad((ref * probe).sum(), refs)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)

    torch.testing.assert_close(norm.running_mean[slots], ref_mean)
    torch.testing.assert_close(norm.running_var[slots], ref_var)
    untouched = torch.ones(16, dtype=torch.bool)
    untouched[slots] = False
    assert torch.all(norm.running_mean[untouched] == 0) and torch.all(norm.running_var[untouched] == 1)
    assert norm.num_batches_tracked.tolist() == [1 if s in (3, 9, 15) else 0 for s in range(16)]


def test_eval_uses_each_patterns_running_stats():
    x, group, slots, weight, bias = _setup(seed=2)
    norm = PatternBatchNorm(5, num_slots=16).double()
    gen = torch.Generator().manual_seed(3)
    norm.running_mean.copy_(torch.randn(16, 5, generator=gen, dtype=torch.float64))
    norm.running_var.copy_(torch.rand(16, 5, generator=gen, dtype=torch.float64) + 0.1)
    norm.eval()
    out = norm(x, make_group_plan(group, 3), slots, weight, bias)
    ref = _per_group_reference(
        x, group, weight, bias, norm.running_mean[slots].clone(), norm.running_var[slots].clone(), training=False
    )
    torch.testing.assert_close(out, ref)
    assert norm.num_batches_tracked.sum() == 0


def test_single_value_per_channel_in_training_raises():
    norm = PatternBatchNorm(2).train()
    x = torch.randn(3, 2, 1, 1)
    group = torch.tensor([0, 1, 1])  # group 0: one sample of 1x1
    with pytest.raises(ValueError, match="single value per channel"):
        norm(x, make_group_plan(group, 2), torch.tensor([1, 2]), torch.ones(2, 2), torch.zeros(2, 2))


def test_affine_shape_is_checked():
    norm = PatternBatchNorm(4)
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="weight must be"):
        norm(x, make_group_plan(torch.tensor([0, 1]), 2), torch.tensor([1, 2]), torch.ones(2, 3), torch.zeros(2, 4))


def test_momentum_none_averages_batches_and_reset_clears_slots():
    norm = PatternBatchNorm(3, num_slots=4, momentum=None).double().train()
    gen = torch.Generator().manual_seed(4)
    batches = [torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64) * (k + 1) for k in range(3)]
    plan = make_group_plan(torch.tensor([0, 0]), 1)
    ones, zeros = torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    for x in batches:
        norm(x, plan, torch.tensor([2]), ones, zeros)
    means = torch.stack([x.mean((0, 2, 3)) for x in batches])
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in batches])  # unbiased
    torch.testing.assert_close(norm.running_mean[2], means.mean(0))
    torch.testing.assert_close(norm.running_var[2], variances.mean(0))
    assert norm.num_batches_tracked.tolist() == [0, 0, 3, 0]
    norm.reset_running_stats(torch.tensor([2]))
    assert torch.all(norm.running_mean == 0) and torch.all(norm.running_var == 1)
    assert norm.num_batches_tracked.sum() == 0
