"""The task loss: focal loss weighted by inverse class frequency (monai is imported on use)."""
from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = ["class_weights", "focal_loss"]


def class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """``w_c = N / (num_classes * n_c)``: proportional to ``N / n_c``, scaled so balanced data gets 1.

    Args:
        labels: int64 [N], values in ``[0, num_classes)``.
        num_classes: C.

    Returns:
        float32 [C]; 0 for a class with no sample (it never appears as a target).
    """
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() == 0:
        raise ValueError("labels is empty")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]")
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))


def focal_loss(weight: Tensor, gamma: float = 2.0):
    """``monai.losses.FocalLoss`` on softmax probabilities with per-class ``weight`` [C].

    Call it as ``loss(logits [B, C], target int64 [B, 1])``; the result is the mean over B and C.
    """
    from monai.losses import FocalLoss

    return FocalLoss(use_softmax=True, weight=weight, to_onehot_y=True, gamma=gamma)
