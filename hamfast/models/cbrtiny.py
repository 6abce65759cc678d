"""CBRTiny: the small Conv-BatchNorm-ReLU classifier of Raghu et al. 2019 (Transfusion).

Each block is ``Conv2d(k x k, stride 1, no padding) -> BatchNorm2d -> ReLU -> MaxPool2d(3, stride 2)``;
after the blocks come global average pooling and ``Linear(widths[-1], num_classes)``. With the
paper's widths (64, 128, 256, 512), 5x5 kernels, 4 inputs and 3 classes it has 4,311,619
parameters. It is HAM's task model and the backbone of every baseline.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hamfast.models.inputs import POOL_KERNEL, POOL_STRIDE, check_input, mask_missing

Tensor = torch.Tensor

__all__ = ["CBRTiny", "CBRTrunk"]


def _check_widths(widths: Sequence[int], kernel_size: int) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) == 0 or any(w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    return widths


class CBRTrunk(nn.Module):
    """The convolutional part of CBRTiny: the blocks and global average pooling, no head.

    Args:
        in_channels: input channels.
        widths: output channels of each block; one block per entry.
        kernel_size: side of the square conv kernels.

    ``forward(x: [B, in_channels, H, W]) -> [B, widths[-1]]`` (pooled features).
    """

    def __init__(self, in_channels: int = 4, widths: Sequence[int] = (64, 128, 256, 512), kernel_size: int = 5):
        super().__init__()
        self.in_channels = int(in_channels)
        self.widths = _check_widths(widths, kernel_size)
        self.kernel_size = int(kernel_size)
        blocks = []
        for cin, cout in zip((self.in_channels,) + self.widths[:-1], self.widths):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, self.kernel_size),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE),
                )
            )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, len(self.widths), self.kernel_size)
        return self.blocks(x).mean((2, 3))


class CBRTiny(nn.Module):
    """CBRTiny classifier.

    Args:
        in_channels: input channels (modalities).
        num_classes: output classes.
        widths: output channels of each conv block (the paper: 64, 128, 256, 512).
        kernel_size: side of the square conv kernels (the paper: 5).

    ``forward(x: [B, in_channels, H, W], available: bool [B, in_channels] | None) -> logits [B, num_classes]``;
    channels whose ``available`` is False are zeroed first. H and W must be at least
    :func:`hamfast.models.inputs.min_input_size` (91 for the paper's configuration).
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 5,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.trunk = CBRTrunk(in_channels, widths, kernel_size)
        self.head = nn.Linear(self.trunk.widths[-1], self.num_classes)

    @property
    def in_channels(self) -> int:
        return self.trunk.in_channels

    @property
    def widths(self) -> tuple[int, ...]:
        return self.trunk.widths

    @property
    def kernel_size(self) -> int:
        return self.trunk.kernel_size

    def forward(self, x: Tensor, available: Optional[Tensor] = None) -> Tensor:
        return self.head(self.trunk(mask_missing(x, available)))
