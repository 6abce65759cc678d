"""Checkpoints: a trained model's weights (every buffer, HAM's per-pattern statistics included),
its :class:`~hamfast.training.trainer.TrainConfig` and its history, in one ``torch.save`` file."""
from __future__ import annotations

import os
import pickle
from typing import Optional, Union

import torch
from torch import nn

from hamfast.files import write_atomic
from hamfast.models.ham import HAM, output_placement
from hamfast.models.hypernet import place_rows
from hamfast.training.divergence import nonfinite_tensors
from hamfast.training.trainer import TrainConfig, TrainResult, build_from_config

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "hamfast.checkpoint/2"
# Format 1 (hamfast <= 0.1) stored HAM's hypernetwork outputs in PyTorch's parameter order; format 2
# places them for the kernels (hamfast.models.ham.output_placement). Both load.
_FORMAT_1 = "hamfast.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def save_checkpoint(
    path: Union[str, os.PathLike],
    result_or_model: Union[TrainResult, nn.Module],
    config: Optional[TrainConfig] = None,
    history: Optional[dict] = None,
) -> None:
    """Write the model weights (all buffers included: HAM's per-pattern statistics), config and history.

    Args:
        path: file to write, atomically (parent folders are created).
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
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"checkpoint {os.fspath(path)} not written: {len(bad)} weight tensor(s) hold NaN or Inf "
                              f"(first: {bad[0]}); the model diverged")
    payload = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "history": history or {}, "state_dict": state}
    # Atomically: an interrupted save leaves the previous checkpoint, never half of one.
    write_atomic(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> TrainResult:
    """Rebuild the model of a checkpoint from its config and load its weights.

    Only tensors and plain containers are unpickled (``weights_only=True``): a file holding other
    Python objects is refused, never executed.

    Returns:
        A :class:`TrainResult` with the model on ``map_location`` in eval mode.

    Raises:
        CheckpointError: (a ``ValueError``) the file is missing, unreadable, damaged, not a hamfast
            checkpoint, or its config and weights do not fit together; one line naming the file.
    """
    name = os.fspath(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {name}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(f"checkpoint {name} holds Python objects other than tensors; it was not written "
                                  "by hamfast and is refused (it could run code when loaded)") from None
        raise CheckpointError(f"checkpoint {name} is not a hamfast checkpoint or is damaged ({_first_line(exc)})") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ValueError, ... for bytes it cannot parse
        raise CheckpointError(f"checkpoint {name} is not a hamfast checkpoint or is damaged "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, _FORMAT_1):
        raise CheckpointError(f"checkpoint {name} is not a hamfast checkpoint (no format {CHECKPOINT_FORMAT!r})")
    missing = [key for key in ("config", "history", "state_dict") if not isinstance(payload.get(key), dict)]
    if missing:
        raise CheckpointError(f"checkpoint {name} lacks {', '.join(missing)}")
    try:
        config = TrainConfig.from_dict(payload["config"])
        with torch.device("meta"):  # shapes only: nothing is allocated before the weights are known to fit
            template = build_from_config(config)
        shapes = {key: tuple(t.shape) for key, t in template.state_dict().items()}
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {name} has an invalid config: {_first_line(exc)}") from None
    state = payload["state_dict"]
    if payload["format"] == _FORMAT_1 and isinstance(template, HAM):
        state = _place_format_1_hypernet(template, state)
    misfit = _shape_problem(shapes, state)
    if misfit:
        raise CheckpointError(f"checkpoint {name}: its weights do not fit its config (method {config.method}, "
                              f"widths {list(config.widths)}, kernel size {config.kernel_size}): {misfit}")
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"checkpoint {name} holds NaN or Inf weights ({len(bad)} tensor(s), first: {bad[0]}): "
                              "the model diverged in training; it is refused")
    model = build_from_config(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {name}: its weights do not fit its config (method {config.method}, "
                              f"widths {list(config.widths)}): {_state_dict_problem(exc)}") from None
    return TrainResult(model.to(map_location).eval(), config, payload["history"])


def _place_format_1_hypernet(model: HAM, state: dict) -> dict:
    """A format-1 HAM state with its hypernetwork's output rows (PyTorch's parameter order) placed as
    format 2 places them; a state that does not fit is left for the shape check to name."""
    placement, width = output_placement(model.layout)
    state = dict(state)
    for key in ("hypernet.out.weight", "hypernet.out.bias"):
        old = state.get(key)
        if not isinstance(old, torch.Tensor) or old.dim() < 1 or old.shape[0] != placement.numel():
            return state
        state[key] = place_rows(old, placement, width)
    return state


def _shape_problem(expected: dict, state: dict) -> str:
    """The first disagreement between the config's tensor shapes and the checkpoint's, or ''."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    for key, shape in expected.items():
        if not isinstance(state[key], torch.Tensor):
            return f"{key} is not a tensor"
        if tuple(state[key].shape) != shape:
            return f"{key} is {list(state[key].shape)} where the config gives {list(shape)}"
    return ""


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _state_dict_problem(exc: BaseException, limit: int = 300) -> str:
    """``load_state_dict``'s multi-line error in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines)
    return text if len(text) <= limit else text[: limit - 3] + "..."
