"""A torch Dataset over prepared slices, with absent modalities zeroed."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

__all__ = ["ModalityDataset"]


class ModalityDataset(Dataset):
    """Samples ``(image float32 [C, H, W], available bool [C], label int64 [])`` as tensors.

    Args:
        images: float [N, C, H, W] (numpy or torch).
        available: bool [N, C]. May be a simulated mask with fewer modalities than the images
            really have: whatever it marks absent is zeroed.
        labels: int [N].
        transform: optional ``(image [C, H, W], available [C]) -> image``, e.g. :class:`ModalityAugment`;
            absent channels are zeroed before and after it.

    A seeded transform makes a single-process run reproducible. With ``DataLoader(num_workers > 0)``
    each worker holds a copy of the transform in the same random state: reseed it per worker (e.g.
    ``worker_init_fn`` calling ``set_random_state``) if the workers must differ.
    """

    def __init__(self, images, available, labels, transform: Optional[Callable] = None):
        self.images = torch.as_tensor(images, dtype=torch.float32)
        self.available = torch.as_tensor(available).bool()
        self.labels = torch.as_tensor(labels).long()
        n = self.images.shape[0]
        if self.images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got {tuple(self.images.shape)}")
        if self.available.shape != self.images.shape[:2]:
            expected = tuple(self.images.shape[:2])
            raise ValueError(f"available must be [N, C] = {expected}, got {tuple(self.available.shape)}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must be [N] = [{n}], got {tuple(self.labels.shape)}")
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        available = self.available[index]
        keep = available.view(-1, 1, 1)
        image = torch.where(keep, self.images[index], 0.0)
        if self.transform is not None:
            image = torch.where(keep, torch.as_tensor(self.transform(image, available), dtype=torch.float32), 0.0)
        return image, available, self.labels[index]
