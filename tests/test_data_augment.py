"""ModalityAugment (MONAI) and ModalityDataset: absent channels stay exactly zero, seeds reproduce."""
import numpy as np
import pytest
import torch

from hamfast.data import ModalityDataset

monai = pytest.importorskip("monai")
from hamfast.data import ModalityAugment  # noqa: E402


def sample(seed=0, size=32):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(4, size, size, generator=generator)


def test_missing_channels_exactly_zero_and_present_ones_augmented():
    augment = ModalityAugment(seed=0)
    available = torch.tensor([True, False, True, False])
    image = sample() + 1  # absent channels hold garbage that must not survive
    outputs = [augment(image, available) for _ in range(20)]
    for out in outputs:
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == image.shape
        assert torch.count_nonzero(out[~available]) == 0
    assert sum(not torch.equal(out[available], image[available]) for out in outputs) >= 10


def test_flip_keeps_channels_aligned():
    image = torch.zeros(4, 32, 32)
    image[:, :16] = 1  # all channels bright in the first half of axis 0
    augment = ModalityAugment(seed=3)
    flipped = []
    for _ in range(20):
        out = augment(image, torch.ones(4, dtype=torch.bool))
        first_half_brighter = out[:, :16].mean((1, 2)) > out[:, 16:].mean((1, 2))
        assert first_half_brighter.all() or not first_half_brighter.any()
        flipped.append(not first_half_brighter[0])
    assert 0 < sum(flipped) < 20


def test_seed_reproduces_and_set_random_state_resets():
    image, available = sample(), torch.tensor([True, True, False, True])
    first = ModalityAugment(seed=7)(image, available)
    a, b, c = ModalityAugment(seed=7), ModalityAugment(seed=7), ModalityAugment(seed=8)
    run_a = [a(image, available) for _ in range(10)]
    run_b = [b(image, available) for _ in range(10)]
    run_c = [c(image, available) for _ in range(10)]
    assert all(torch.equal(x, y) for x, y in zip(run_a, run_b))
    assert not all(torch.equal(x, y) for x, y in zip(run_a, run_c))
    assert torch.equal(first, run_a[0])
    a.set_random_state(7)
    assert torch.equal(a(image, available), run_a[0])
    big = ModalityAugment(seed=2**40)  # any non-negative seed
    assert torch.count_nonzero(big(image, available)[2]) == 0


def test_augment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="available"):
        ModalityAugment(seed=0)(sample(), torch.ones(3, dtype=torch.bool))


def test_dataset_items_and_simulated_mask():
    images = np.stack([sample(i).numpy() + 0.5 for i in range(6)])
    available = np.ones((6, 4), dtype=bool)
    available[2, [0, 3]] = False  # a simulated mask: the images still hold these channels
    labels = np.array([0, 1, 2, 0, 1, 2])
    dataset = ModalityDataset(images, available, labels)
    assert len(dataset) == 6
    image, mu, label = dataset[2]
    assert image.dtype == torch.float32 and mu.dtype == torch.bool and label.dtype == torch.int64 and label.dim() == 0
    assert torch.count_nonzero(image[[0, 3]]) == 0
    torch.testing.assert_close(image[[1, 2]], torch.as_tensor(images[2, [1, 2]]))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert [tuple(t.shape) for t in batch] == [(4, 4, 32, 32), (4, 4), (4,)]


def test_dataset_with_augmentation_is_reproducible_and_zeroes_absent():
    images = np.stack([sample(i).numpy() for i in range(4)])
    available = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=bool)

    def items(seed):
        dataset = ModalityDataset(images, available, np.zeros(4, dtype=np.int64), transform=ModalityAugment(seed=seed))
        return [dataset[i][0] for i in range(4)]

    first, second = items(1), items(1)
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    for image, mu in zip(first, torch.as_tensor(available)):
        assert torch.count_nonzero(image[~mu]) == 0


def test_dataset_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="available"):
        ModalityDataset(np.zeros((3, 4, 8, 8)), np.ones((3, 3), bool), np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        ModalityDataset(np.zeros((3, 4, 8, 8)), np.ones((3, 4), bool), np.zeros(2))
