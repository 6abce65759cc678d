"""Precise per-pattern batch-norm statistics for HAM."""
import torch

from hamfast.models import HAM
from hamfast.patterns import code_to_mu
from hamfast.training.recalibrate import recalibrate_pattern_norms


def test_recalibrated_statistics_are_the_patterns_batch_statistics():
    torch.manual_seed(0)
    ham = HAM(widths=(4, 8, 8, 8))
    images = torch.rand(6, 4, 96, 96, generator=torch.Generator().manual_seed(1))
    available = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool
    )
    ham.norms[0].running_mean.fill_(5.0)  # stale statistics
    params = {n: p.clone() for n, p in ham.named_parameters()}
    ham.eval()

    codes = recalibrate_pattern_norms(ham, images, available, batch_size=8)

    assert sorted(codes) == list(range(1, 16))  # the complete samples support every pattern
    assert not ham.training and all(norm.momentum == 0.1 for norm in ham.norms)
    assert all(torch.equal(p, params[n]) for n, p in ham.named_parameters())
    with torch.no_grad():
        for code in (15, 5, 1):  # one batch each: the first conv's output over that pattern's samples
            mu = code_to_mu(code)
            members = (available & mu).eq(mu).all(1)
            conv = ham.task_model(mu).trunk.blocks[0][0]
            out = conv(images[members] * mu[None, :, None, None]).transpose(0, 1).flatten(1)  # [C, n * H * W]
            torch.testing.assert_close(ham.norms[0].running_mean[code], out.mean(1))
            torch.testing.assert_close(ham.norms[0].running_var[code], out.var(1))
            assert ham.norms[0].num_batches_tracked[code] == 1


def test_unsupported_patterns_keep_their_statistics():
    torch.manual_seed(0)
    ham = HAM(widths=(4, 8, 8, 8))
    images = torch.rand(3, 4, 96, 96)
    available = torch.tensor([[1, 0, 1, 0]] * 3, dtype=torch.bool)
    ham.norms[1].running_mean[8] = 3.0  # flair alone: no sample has flair
    codes = recalibrate_pattern_norms(ham, images, available, batch_size=2)
    assert sorted(codes) == [1, 4, 5]
    assert torch.all(ham.norms[1].running_mean[8] == 3.0)
    assert ham.norms[0].num_batches_tracked[5] == 2  # 3 samples in two near-equal batches
