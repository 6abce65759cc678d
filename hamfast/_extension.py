"""Loads the compiled op library ``hamfast._C`` and reports what it was built with.

Importing ``hamfast._C`` registers the ``torch.ops.hamfast.*`` operators (CPU kernels always, CUDA
kernels when the build found nvcc and a CUDA build of torch). Without it, hamfast runs on the
pure-PyTorch reference and says so once. ``HAMFAST_NO_EXTENSION=1`` forces the reference.
"""
from __future__ import annotations

import os
import warnings

import torch

_load_error: Exception | None = None
if os.environ.get("HAMFAST_NO_EXTENSION", "0") not in ("", "0"):
    _load_error = RuntimeError("disabled by HAMFAST_NO_EXTENSION")
else:
    try:
        from hamfast import _C  # noqa: F401  (importing registers torch.ops.hamfast)
    except ImportError as exc:  # not built, or built against another torch
        _load_error = exc

_warned = False


def available() -> bool:
    """True when ``hamfast._C`` is loaded and its CPU kernels are registered."""
    return _load_error is None


def has_cuda_kernels() -> bool:
    """True when the loaded extension was compiled with its CUDA kernels."""
    return available() and bool(torch.ops.hamfast.built_with_cuda())


def warn_fallback(reason: str) -> None:
    """Warn (once per process) that the pure-PyTorch reference runs instead of the fused op."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"hamfast: fused grouped_conv2d unavailable ({reason}); using the pure-PyTorch reference. "
            "Build it with `pip install --no-build-isolation .`.",
            RuntimeWarning,
            stacklevel=3,
        )


def describe() -> dict:
    """A small summary for logs and benchmark records."""
    return {
        "extension": available(),
        "cuda_kernels": has_cuda_kernels(),
        "load_error": None if _load_error is None else str(_load_error),
    }
