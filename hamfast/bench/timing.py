"""Timing and memory measurement of one case, turned into a JSON record."""
from __future__ import annotations

import gc
import itertools
import math
import time
from typing import Callable, Iterator, Optional, Sequence

import torch

from hamfast.bench.cases import (
    ConvCase,
    ConvInputs,
    conv_step,
    ham_train_step,
    make_conv_inputs,
    mixed_batch,
)
from hamfast.bench.config import (
    MAX_INPUT_SETS,
    MIN_REPEATS,
    NUM_CLASSES,
    NUM_PATTERNS,
    SEED,
    BenchConfig,
)
from hamfast.models import HAM
from hamfast.patterns import NUM_MODALITIES

Tensor = torch.Tensor


def dtype_label(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step: Callable, inputs: Iterator, count: int, device: torch.device) -> list[float]:
    """Run ``count`` steps on successive items of ``inputs``; the time of each in ms."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
        for start, end in events:
            start.record()
            step(next(inputs))
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(count):
        started = time.perf_counter()
        step(next(inputs))
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(
    step: Callable, input_sets: Sequence, device: torch.device, *, warmup: int, repeats: int, max_seconds: float
) -> list[float]:
    """Per-step times in ms of ``step`` cycling through ``input_sets``.

    ``warmup`` untimed steps come first (cuDNN autotuning, allocator growth; they stop early after
    two once they have taken ``max_seconds``), then one timed probe step that sizes the run:
    ``repeats`` timed steps, fewer if they would take longer than ``max_seconds`` in all, but at
    least ``min(MIN_REPEATS, repeats)``.
    """
    inputs = itertools.cycle(input_sets)
    started = time.perf_counter()
    for done in range(1, warmup + 1):
        step(next(inputs))
        _synchronize(device)
        if done >= 2 and time.perf_counter() - started > max_seconds:
            break
    probe_ms = _time_steps(step, inputs, 1, device)[0]
    affordable = int(max_seconds * 1e3 / max(probe_ms, 1e-6))
    count = max(min(MIN_REPEATS, repeats), min(repeats, affordable))
    return _time_steps(step, inputs, count, device)


def _summary(times_ms: list[float], batch: int) -> dict:
    """Median, 10th and 90th percentile in ms, throughput in samples/s."""
    p10, median, p90 = torch.tensor(times_ms, dtype=torch.float64).quantile(
        torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    ).tolist()
    return {
        "ms_median": round(median, 4),
        "ms_p10": round(p10, 4),
        "ms_p90": round(p90, 4),
        "samples_per_s": round(batch / median * 1e3, 1),
        "repeats": len(times_ms),
    }


def _allocated_mb(device: torch.device, peak: bool = False) -> Optional[float]:
    """Memory held by tensors on a CUDA device (its peak since the last reset), MiB; None on CPU."""
    if device.type != "cuda":
        return None
    allocated = torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)
    return round(allocated / 2**20, 1)


def _release_memory(device: torch.device) -> None:
    """Hand a finished case's GPU memory back, so the next case starts from an empty cache."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def failure_note(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "out of memory"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line[:300]}"


def _input_set_count(set_bytes: int, rotate_mb: float) -> int:
    return max(2, min(MAX_INPUT_SETS, math.ceil(rotate_mb * 2**20 / max(set_bytes, 1))))


def _timed_record(
    step: Callable, make_set: Callable[[], object], set_bytes: Callable[[object], int], batch: int,
    cfg: BenchConfig, device: torch.device,
) -> dict:
    """Draw the input sets, time ``step`` on them and measure peak memory.

    ``peak_mem_mb`` is the peak allocated during warm-up and timing, with every input set
    resident (``input_mem_mb``); out-of-memory and other runtime errors become a ``note``
    with null timings.
    """
    record = dict.fromkeys(
        ("ms_median", "ms_p10", "ms_p90", "samples_per_s", "repeats", "peak_mem_mb", "input_mem_mb", "input_sets")
    )
    input_sets = []
    try:
        input_sets.append(make_set())
        count = _input_set_count(set_bytes(input_sets[0]), cfg.rotate_mb)
        input_sets += [make_set() for _ in range(count - 1)]
        _synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        record["input_sets"] = len(input_sets)
        record["input_mem_mb"] = _allocated_mb(device)
        times = measure(
            step, input_sets, device, warmup=cfg.warmup, repeats=cfg.repeats, max_seconds=cfg.max_case_seconds
        )
        record.update(_summary(times, batch), peak_mem_mb=_allocated_mb(device, peak=True))
    except RuntimeError as exc:  # includes torch.cuda.OutOfMemoryError
        record["note"] = failure_note(exc)
    finally:
        input_sets.clear()
        _release_memory(device)
    return record


def run_conv_case(case: ConvCase, impl: str, cfg: BenchConfig, device: torch.device) -> dict:
    """The record of one conv case and implementation."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    record = {
        "bench": "conv", "layer": case.layer, "input": case.input, "B": case.batch, "G": case.groups,
        "pass": case.pass_, "impl": impl, "dtype": dtype_label(case.dtype),
        "size": case.size, "cin": case.cin, "cout": case.cout,
    }
    record.update(
        _timed_record(
            conv_step(impl, case.pass_), lambda: make_conv_inputs(case, impl, generator),
            ConvInputs.nbytes, case.batch, cfg, device,
        )
    )
    if record["ms_median"]:
        record["tflops"] = round(case.flops() / (record["ms_median"] * 1e-3) / 1e12, 3)
    return record


def run_ham_case(input_size: int, batch: int, backend: str, cfg: BenchConfig, device: torch.device) -> dict:
    """The record of one HAM training step (float32, mixed patterns, paper hidden width 4)."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    torch.manual_seed(SEED)  # the same initial model for both backends
    model = HAM(NUM_MODALITIES, NUM_CLASSES, cfg.widths, backend=backend).to(device).train()
    record = {
        "bench": "ham_step", "layer": None, "input": input_size, "B": batch, "G": min(batch, NUM_PATTERNS),
        "pass": "fwd+bwd", "impl": backend, "dtype": "float32",
    }

    def batch_bytes(b: tuple[Tensor, ...]) -> int:
        return sum(t.numel() * t.element_size() for t in b)

    record.update(
        _timed_record(
            ham_train_step(model), lambda: mixed_batch(batch, input_size, generator),
            batch_bytes, batch, cfg, device,
        )
    )
    del model  # freed before the cache is emptied, so the next case starts without it
    _release_memory(device)
    return record


