"""Training augmentation with MONAI that never puts signal into a missing modality's channel."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["ModalityAugment"]


class ModalityAugment:
    """Random augmentation of one sample ``(image [C, H, W], available bool [C]) -> image [C, H, W]``.

    With MONAI array transforms:

    * jointly on all channels (they stay aligned): ``RandFlip`` left-right (p = 0.5);
    * on each present channel independently: ``RandGaussianNoise`` (p = 0.3, sd 0.03),
      ``RandGaussianSmooth`` (p = 0.2, sigma 0.25-1 px), ``RandAdjustContrast`` (p = 0.3, gamma
      0.7-1.5), ``RandHistogramShift`` (p = 0.2, 5-10 control points).

    Absent channels are exactly zero afterwards, whatever they held. Returns a float32 tensor on the
    input's device (plain ``torch.Tensor``, not a MONAI ``MetaTensor``).

    Args:
        seed: seeds the random state (None: non-deterministic). The same seed and the same sequence
            of calls give the same outputs.
    """

    def __init__(self, seed: Optional[int] = None):
        from monai.transforms import (
            Compose,
            RandAdjustContrast,
            RandFlip,
            RandGaussianNoise,
            RandGaussianSmooth,
            RandHistogramShift,
        )

        self.spatial = Compose([RandFlip(prob=0.5, spatial_axis=0)])
        self.intensity = Compose([
            RandGaussianNoise(prob=0.3, mean=0.0, std=0.03),
            RandGaussianSmooth(prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            RandAdjustContrast(prob=0.3, gamma=(0.7, 1.5)),
            RandHistogramShift(prob=0.2, num_control_points=(5, 10)),
        ])
        if seed is not None:
            self.set_random_state(seed)

    def set_random_state(self, seed: int) -> "ModalityAugment":
        """Reseed every transform from ``seed`` (any non-negative int); returns self."""
        spatial_seed, intensity_seed = np.random.SeedSequence(seed).generate_state(2)
        self.spatial.set_random_state(seed=int(spatial_seed))
        self.intensity.set_random_state(seed=int(intensity_seed))
        return self

    def __call__(self, image, available) -> torch.Tensor:
        from monai.utils import convert_to_tensor

        image = torch.as_tensor(image, dtype=torch.float32)
        available = torch.as_tensor(available, dtype=torch.bool, device=image.device)
        if image.dim() != 3 or available.shape != image.shape[:1]:
            raise ValueError(
                f"expected image [C, H, W] and available [C], got {tuple(image.shape)} and {tuple(available.shape)}"
            )
        out = convert_to_tensor(self.spatial(image), track_meta=False)
        channels = [
            convert_to_tensor(self.intensity(channel[None]), track_meta=False)[0] if here else torch.zeros_like(channel)
            for channel, here in zip(out, available.tolist())
        ]
        return torch.stack(channels).to(torch.float32)
