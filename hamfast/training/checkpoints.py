"""Checkpoints: a trained model's weights (every buffer, HAM's per-pattern statistics included),
its :class:`~hamfast.training.trainer.TrainConfig` and its history, in one ``torch.save`` file."""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

from hamfast.training.trainer import TrainConfig, TrainResult, build_from_config

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "hamfast.checkpoint/1"


def save_checkpoint(
    path: Union[str, os.PathLike],
    result_or_model: Union[TrainResult, nn.Module],
    config: Optional[TrainConfig] = None,
    history: Optional[dict] = None,
) -> None:
    """Write the model weights (all buffers included: HAM's per-pattern statistics), config and history.

    Args:
        path: file to write (parent folders are created).
        result_or_model: a :class:`TrainResult`, or a model (then ``config`` is required).
        config: overrides the result's config.
        history: overrides the result's history.
    """
    if isinstance(result_or_model, TrainResult):
        model = result_or_model.model
        config = config if config is not None else result_or_model.config
        history = history if history is not None else result_or_model.history
    else:
        model = result_or_model
    if not isinstance(config, TrainConfig):
        raise ValueError("config (a TrainConfig) is needed to save a bare model")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "history": history or {}, "state_dict": state},
        path,
    )


def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> TrainResult:
    """Rebuild the model of a checkpoint from its config and load its weights.

    Returns:
        A :class:`TrainResult` with the model on ``map_location`` in eval mode.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a hamfast checkpoint ({CHECKPOINT_FORMAT})")
    config = TrainConfig.from_dict(payload["config"])
    model = build_from_config(config)
    model.load_state_dict(payload["state_dict"])
    return TrainResult(model.to(map_location).eval(), config, payload["history"])
