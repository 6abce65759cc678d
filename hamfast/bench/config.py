"""Benchmark configuration: implementations, passes, presets and the paper's sizes."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hamfast.patterns import NUM_MODALITIES


IMPLS = ("fused", "reference", "per_sample", "bound")
HAM_BACKENDS = ("fused", "reference")
PASSES = ("fwd", "fwd+bwd")
BENCHES = ("conv", "ham_step")
PAPER_WIDTHS = (64, 128, 256, 512)
NUM_CLASSES = 3
KERNEL = 5
NUM_PATTERNS = 2**NUM_MODALITIES - 1  # the non-empty modality patterns
HAM_LR = 1e-4  # HAM's training learning rate (hamfast.training)
MIN_REPEATS = 10
MAX_INPUT_SETS = 32
SEED = 0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---- configuration ----------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """What one benchmark run measures.

    Attributes:
        device: torch device string ("cuda", "cuda:1", "cpu").
        benches: which of ``"conv"``, ``"ham_step"`` to run.
        inputs: network input sides in px (each conv case uses its layer's input side).
        batches: conv batch sizes B.
        groups: conv group counts G (samples spread evenly over them).
        layers: 1-based CBRTiny conv layers to benchmark.
        passes: ``"fwd"`` and/or ``"fwd+bwd"``.
        impls: conv implementations (:data:`IMPLS`); the HAM step runs those in :data:`HAM_BACKENDS`.
        dtypes: conv dtypes (names in :data:`DTYPES`); the HAM step always runs in float32.
        extra_dtypes: dtypes measured only on the cases the targets read: every batch size and
            layer, fwd+bwd, the first of ``groups`` (G = 15 by default); cheaper than adding them
            to ``dtypes``.
        widths: CBRTiny block widths.
        ham_batches: batch sizes of the HAM step.
        repeats: timed steps per case (fewer when they would exceed ``max_case_seconds``, never
            fewer than :data:`MIN_REPEATS` or ``repeats``, whichever is smaller).
        warmup: untimed steps per case before timing.
        max_case_seconds: rough cap on the timed part of one case, in seconds.
        rotate_mb: each case cycles through enough input sets (2 to :data:`MAX_INPUT_SETS`) to
            cover this many MiB, so that caches (an H100 has 50 MB of L2) do not flatter.
        cudnn_benchmark: value of ``torch.backends.cudnn.benchmark`` during the run.
        preset: the name of the preset this config came from (recorded in the result).
    """

    device: str = "cuda"
    benches: tuple[str, ...] = BENCHES
    inputs: tuple[int, ...] = (128, 240)
    batches: tuple[int, ...] = (16, 64, 256)
    # G=15 first: the cases the targets are read from are done first should a run be cut short.
    groups: tuple[int, ...] = (15, 4, 1)
    layers: tuple[int, ...] = (1, 2, 3, 4)
    passes: tuple[str, ...] = PASSES
    impls: tuple[str, ...] = IMPLS
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    extra_dtypes: tuple[str, ...] = ()
    widths: tuple[int, ...] = PAPER_WIDTHS
    ham_batches: tuple[int, ...] = (16, 64)
    repeats: int = 50
    warmup: int = 10
    max_case_seconds: float = 2.0
    rotate_mb: float = 256.0
    cudnn_benchmark: bool = True
    preset: str = "full"


PRESETS = {
    "full": {},
    # 132 float32 records took 92 s on an H200 with 50 repeats and 10 warm-ups (main c4b2164); with
    # 30 and 5 (CUDA-event medians of 30 steps are stable to a few %) there is room for the 32
    # bfloat16 records of the target cases in about the same time.
    "quick": dict(
        inputs=(128,), batches=(16, 64), groups=(15, 1), dtypes=("float32",), extra_dtypes=("bfloat16",),
        repeats=30, warmup=5,
    ),
    # Tiny shapes on CPU: checks the machinery (tests), not the speed.
    "dry-run": dict(
        device="cpu",
        inputs=(96,),
        batches=(4,),
        groups=(3,),
        dtypes=("float32",),
        widths=(8, 8, 8, 8),
        ham_batches=(4,),
        repeats=3,
        warmup=1,
        rotate_mb=0.0,
    ),
}


