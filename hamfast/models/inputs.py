"""Input checks shared by the models: shapes, the smallest valid slice, the availability mask."""
from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor

POOL_KERNEL = 3
POOL_STRIDE = 2

__all__ = ["min_input_size", "check_input", "as_available", "mask_missing"]


def min_input_size(num_blocks: int = 4, kernel_size: int = 5) -> int:
    """The smallest square input a CBRTiny with ``num_blocks`` blocks accepts.

    Working backwards from a 1x1 output: a 3x3/2 max-pool needs ``2 * (s - 1) + 3`` inputs for
    ``s`` outputs and a valid k x k conv ``s + k - 1``. For 4 blocks of 5x5 this gives 91
    (a 96x96 slice ends in 1x1 after the last pool).
    """
    size = 1
    for _ in range(num_blocks):
        size = POOL_STRIDE * (size - 1) + POOL_KERNEL + kernel_size - 1
    return size


def check_input(x: Tensor, in_channels: int, num_blocks: int, kernel_size: int) -> None:
    """Raise a clear error unless ``x`` is [B, in_channels, H, W] with H, W large enough."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a 4-D tensor [B, {in_channels}, H, W], got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"x has {x.shape[1]} channels, the model expects in_channels={in_channels}")
    smallest = min_input_size(num_blocks, kernel_size)
    if x.shape[2] < smallest or x.shape[3] < smallest:
        raise ValueError(
            f"x is {x.shape[2]}x{x.shape[3]}, but {num_blocks} blocks of {kernel_size}x{kernel_size} conv "
            f"+ 3x3/2 max-pool need at least {smallest}x{smallest}"
        )


def as_available(available, x: Tensor) -> Tensor:
    """``available`` (bool-like [B, C], tensor or array) as a bool tensor on ``x``'s device, checked against x."""
    available = torch.as_tensor(available, device=x.device)
    if available.shape != x.shape[:2]:
        raise ValueError(
            f"available must be [B, C] = {tuple(x.shape[:2])} to match x, got {tuple(available.shape)}"
        )
    return available.bool()


def mask_missing(x: Tensor, available: Optional[Tensor]) -> Tensor:
    """Zero the channels of absent modalities (``where``, not a product, so NaN there is dropped too).

    Args:
        x: [B, C, H, W].
        available: bool [B, C] or None (nothing masked).
    """
    if available is None:
        return x
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    return torch.where(as_available(available, x)[:, :, None, None], x, x.new_zeros(()))
