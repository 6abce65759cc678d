"""Benchmarks of the grouped convolution and of a HAM training step (CPU or CUDA).

Two benchmarks, one JSON record per case and implementation (schema in ``benchmarks/README.md``):

* ``conv``: one conv layer of CBRTiny (5x5, no padding) run as a grouped convolution over a batch
  of B samples spread evenly over G weight groups, forward only (``fwd``, no autograd graph) or
  forward plus the gradients of x, weight and bias (``fwd+bwd``). Implementations (:data:`IMPLS`):

  - ``fused``: :func:`hamfast.ops.grouped_conv2d`, the compiled op;
  - ``reference``: :func:`hamfast.ops.grouped_conv2d_reference`, one cuDNN/oneDNN conv per group;
  - ``per_sample``: the ``groups=B`` fold: each sample's weights gathered to [B*Cout, Cin, k, k],
    x viewed as [1, B*Cin, H, W], one ``F.conv2d(..., groups=B)``;
  - ``bound``: one conv of the whole batch with a single shared weight, the same arithmetic with no
    grouping at all: the practical speed limit.

* ``ham_step``: one training step of :class:`hamfast.models.HAM` with the paper's widths
  (hypernetwork, four grouped conv layers, per-pattern batch norm, head, loss, backward, RMSprop
  step) on a batch whose samples are spread over all 15 modality patterns, for the ``fused`` and
  ``reference`` backends. The loss is ``F.cross_entropy``: training's class-weighted focal loss
  needs monai, and the loss is a negligible part of the step.

Timing: CUDA events on a GPU (``time.perf_counter`` on CPU), after warm-up steps, median of many
repeats; every case cycles through enough freshly drawn input sets that a set is no longer in the
cache when it comes round again. TF32 and cuDNN settings are PyTorch's (``cudnn.benchmark`` is
switched on unless told otherwise) and are written into the result.

Command line: ``hamfast bench --out FILE.json`` or ``python benchmarks/bench_gpu.py --out FILE.json``
(``--quick``, ``--dry-run``, ... see ``--help``); ``--table FILE.json`` prints the ratio tables
and the performance targets of issue 6 for a result file.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

import hamfast
from hamfast import _extension, ops
from hamfast.models import HAM
from hamfast.models.inputs import POOL_KERNEL, POOL_STRIDE
from hamfast.patterns import NUM_MODALITIES, code_to_mu

Tensor = torch.Tensor

__all__ = [
    "IMPLS",
    "HAM_BACKENDS",
    "PASSES",
    "BenchConfig",
    "ConvCase",
    "ConvInputs",
    "layer_input_sizes",
    "conv_cases",
    "spread_groups",
    "make_conv_inputs",
    "conv_step",
    "mixed_batch",
    "ham_train_step",
    "fused_unavailable",
    "measure",
    "run",
    "ratio_tables",
    "target_checks",
    "merge_results",
    "format_report",
    "add_arguments",
    "main",
]

IMPLS = ("fused", "reference", "per_sample", "bound")
HAM_BACKENDS = ("fused", "reference")
PASSES = ("fwd", "fwd+bwd")
BENCHES = ("conv", "ham_step")
PAPER_WIDTHS = (64, 128, 256, 512)
NUM_CLASSES = 3
KERNEL = 5
NUM_PATTERNS = 2**NUM_MODALITIES - 1  # the non-empty modality patterns
HAM_LR = 1e-4  # HAM's training learning rate (hamfast.train)
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
    # About 130 cases: fits in ~3 minutes on an H100.
    "quick": dict(inputs=(128,), batches=(16, 64), groups=(15, 1), dtypes=("float32",)),
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


# ---- conv cases and their inputs --------------------------------------------------------------


def layer_input_sizes(input_size: int, num_layers: int = 4, kernel_size: int = KERNEL) -> list[int]:
    """Side in px of each conv layer's input in CBRTiny (conv k x k no padding, then 3x3/2 max-pool).

    ``layer_input_sizes(128) == [128, 61, 28, 11]``, ``layer_input_sizes(240) == [240, 117, 56, 25]``.
    """
    sizes = [int(input_size)]
    for _ in range(num_layers - 1):
        conv = ops.conv_output_size(sizes[-1], kernel_size, 1, 0)
        sizes.append(ops.conv_output_size(conv, POOL_KERNEL, POOL_STRIDE, 0))
    return sizes


@dataclass(frozen=True)
class ConvCase:
    """One CBRTiny conv layer as a grouped convolution.

    Attributes:
        layer: 1-based layer index.
        input: side of the network's input, px.
        size: side of this layer's input, px.
        cin, cout: input and output channels.
        batch: B.
        groups: G; the samples are spread evenly over them.
        pass_: ``"fwd"`` or ``"fwd+bwd"``.
        dtype: element type of x, weight and bias.
        kernel: conv kernel side.
    """

    layer: int
    input: int
    size: int
    cin: int
    cout: int
    batch: int
    groups: int
    pass_: str
    dtype: torch.dtype = torch.float32
    kernel: int = KERNEL

    @property
    def output_size(self) -> int:
        return ops.conv_output_size(self.size, self.kernel, 1, 0)

    def flops(self) -> int:
        """Multiply-adds x 2 of the case: forward, or forward plus grad-input and grad-weight."""
        forward = 2 * self.batch * self.cout * self.cin * self.kernel**2 * self.output_size**2
        return forward * (1 if self.pass_ == "fwd" else 3)


def conv_cases(cfg: BenchConfig, in_channels: int = NUM_MODALITIES) -> Iterator[ConvCase]:
    """The conv cases of ``cfg``, in run order (dtype, input, B, G, layer, pass)."""
    channels = (in_channels,) + tuple(cfg.widths)
    for dtype, input_size, batch, groups in itertools.product(cfg.dtypes, cfg.inputs, cfg.batches, cfg.groups):
        sizes = layer_input_sizes(input_size, len(cfg.widths))
        for layer, pass_ in itertools.product(cfg.layers, cfg.passes):
            yield ConvCase(
                layer, input_size, sizes[layer - 1], channels[layer - 1], channels[layer],
                batch, groups, pass_, DTYPES[dtype],
            )


def spread_groups(batch: int, num_groups: int, generator: torch.Generator) -> Tensor:
    """int64 [batch] on the generator's device: groups ``0..num_groups-1`` spread evenly (counts
    differ by at most one), in random order as in a real mixed batch."""
    order = torch.randperm(batch, generator=generator, device=generator.device)
    return (torch.arange(batch, device=generator.device) % num_groups)[order]


@dataclass
class ConvInputs:
    """One input set of a conv case.

    Attributes:
        x: [B, Cin, H, W].
        weight: [G', Cout, Cin, k, k] with G' = G (G' = 1 for ``bound``).
        bias: [G', Cout].
        group: int64 [B].
        plan: the batch sorted by group (made once per batch, as HAM does).
        grad_out: [B, Cout, Ho, Wo] for ``fwd+bwd``, None for ``fwd``.
    """

    x: Tensor
    weight: Tensor
    bias: Tensor
    group: Tensor
    plan: ops.GroupPlan
    grad_out: Optional[Tensor]

    def nbytes(self) -> int:
        tensors = (self.x, self.weight, self.bias, self.group, self.grad_out)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def make_conv_inputs(case: ConvCase, impl: str, generator: torch.Generator) -> ConvInputs:
    """A fresh random input set for ``case`` on the generator's device.

    Weights and biases are scaled by ``1/sqrt(Cin*k*k)`` (PyTorch's init scale). With ``fwd+bwd``
    x, weight and bias require grad.
    """
    device, dtype = generator.device, case.dtype
    needs_grad = case.pass_ == "fwd+bwd"
    weight_sets = 1 if impl == "bound" else case.groups
    scale = (case.cin * case.kernel**2) ** -0.5

    def draw(*shape: int, scaled: bool = False) -> Tensor:
        t = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return (t * scale if scaled else t).requires_grad_(needs_grad)

    group = spread_groups(case.batch, case.groups, generator)
    return ConvInputs(
        x=draw(case.batch, case.cin, case.size, case.size),
        weight=draw(weight_sets, case.cout, case.cin, case.kernel, case.kernel, scaled=True),
        bias=draw(weight_sets, case.cout, scaled=True),
        group=group,
        plan=ops.make_group_plan(group, case.groups),
        grad_out=(
            torch.randn((case.batch, case.cout, case.output_size, case.output_size),
                        generator=generator, device=device, dtype=dtype)
            if needs_grad else None
        ),
    )


def _fused(inp: ConvInputs) -> Tensor:
    return ops.grouped_conv2d(inp.x, inp.weight, inp.bias, inp.group, plan=inp.plan)


def _reference(inp: ConvInputs) -> Tensor:
    return ops.grouped_conv2d_reference(inp.x, inp.weight, inp.bias, inp.group, plan=inp.plan)


def _per_sample(inp: ConvInputs) -> Tensor:
    batch, cin, height, width = inp.x.shape
    weight = inp.weight[inp.group].flatten(0, 1)  # [B*Cout, Cin, k, k]
    bias = inp.bias[inp.group].flatten()  # [B*Cout]
    out = F.conv2d(inp.x.reshape(1, batch * cin, height, width), weight, bias, groups=batch)
    return out.reshape(batch, -1, out.shape[2], out.shape[3])


def _bound(inp: ConvInputs) -> Tensor:
    return F.conv2d(inp.x, inp.weight[0], inp.bias[0])


CONV_IMPLS: dict[str, Callable[[ConvInputs], Tensor]] = {
    "fused": _fused,
    "reference": _reference,
    "per_sample": _per_sample,
    "bound": _bound,
}


def conv_step(impl: str, pass_: str) -> Callable[[ConvInputs], object]:
    """The timed step of a conv case: the forward (its inputs do not require grad, so no graph is
    recorded), or forward plus the gradients of x, weight and bias (``torch.autograd.grad``, so
    nothing accumulates between steps)."""
    conv = CONV_IMPLS[impl]
    if pass_ == "fwd":
        return conv

    def forward_backward(inp: ConvInputs) -> None:
        torch.autograd.grad(conv(inp), (inp.x, inp.weight, inp.bias), inp.grad_out)

    return forward_backward


# ---- HAM training step ------------------------------------------------------------------------


def mixed_batch(batch: int, input_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A random batch on the generator's device whose samples are spread evenly over the 15
    non-empty modality patterns.

    Returns:
        x float32 [B, 4, S, S], available bool [B, 4], labels int64 [B] in ``[0, NUM_CLASSES)``.
    """
    device = generator.device
    codes = 1 + spread_groups(batch, NUM_PATTERNS, generator)
    x = torch.randn((batch, NUM_MODALITIES, input_size, input_size), generator=generator, device=device)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=generator, device=device)
    return x, code_to_mu(codes, NUM_MODALITIES), labels


def ham_train_step(model: HAM) -> Callable[[tuple[Tensor, Tensor, Tensor]], None]:
    """One optimiser step of ``model`` (RMSprop, lr 1e-4, as HAM trains) on a batch from
    :func:`mixed_batch`, with cross-entropy loss."""
    optimizer = torch.optim.RMSprop(model.parameters(), lr=HAM_LR)

    def step(batch: tuple[Tensor, Tensor, Tensor]) -> None:
        x, available, labels = batch
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, available), labels).backward()
        optimizer.step()

    return step


# ---- timing and memory ------------------------------------------------------------------------


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


def _failure_note(exc: BaseException) -> str:
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
        record["note"] = _failure_note(exc)
    finally:
        input_sets.clear()
        _release_memory(device)
    return record


def run_conv_case(case: ConvCase, impl: str, cfg: BenchConfig, device: torch.device) -> dict:
    """The record of one conv case and implementation."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    record = {
        "bench": "conv", "layer": case.layer, "input": case.input, "B": case.batch, "G": case.groups,
        "pass": case.pass_, "impl": impl, "dtype": _dtype_name(case.dtype),
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


# ---- the run ----------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def fused_unavailable(device: torch.device) -> Optional[str]:
    """Why the fused op would silently run the reference on ``device``, or None if it would not."""
    if not _extension.available():
        return f"hamfast._C not loaded ({_extension.describe()['load_error']})"
    if device.type == "cuda" and not _extension.has_cuda_kernels():
        return "hamfast._C was built without CUDA kernels"
    return None


def _unsupported(impl: str, dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """Why ``impl`` cannot run in ``dtype`` on ``device`` (tried on tiny shapes), or None."""
    if impl == "fused" and (reason := fused_unavailable(device)):
        return reason
    case = ConvCase(1, 8, 8, 2, 2, 2, 2, "fwd+bwd", dtype, kernel=3)
    try:
        conv_step(impl, case.pass_)(make_conv_inputs(case, impl, torch.Generator(device=device).manual_seed(SEED)))
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        return _failure_note(exc)
    return None


def _jobs(cfg: BenchConfig, device: torch.device, skipped: list[dict]) -> list[tuple[str, Callable[[], dict]]]:
    """(progress label, record maker) for every case of ``cfg``; appends what cannot run to ``skipped``."""
    jobs = []
    if "ham_step" in cfg.benches:
        fused_reason = fused_unavailable(device)
        for backend in (b for b in HAM_BACKENDS if b in cfg.impls):
            if backend == "fused" and fused_reason:
                skipped.append({"bench": "ham_step", "impl": backend, "dtype": "float32", "note": fused_reason})
                continue
            for input_size, batch in itertools.product(cfg.inputs, cfg.ham_batches):
                label = f"ham_step {input_size}px B{batch} {backend}"
                jobs.append((label, lambda i=input_size, b=batch, k=backend: run_ham_case(i, b, k, cfg, device)))
    if "conv" in cfg.benches:
        runnable = {}
        for dtype_name, impl in itertools.product(cfg.dtypes, cfg.impls):
            reason = _unsupported(impl, DTYPES[dtype_name], device)
            runnable[dtype_name, impl] = reason is None
            if reason:
                skipped.append({"bench": "conv", "impl": impl, "dtype": dtype_name, "note": reason})
        for case in conv_cases(cfg):
            for impl in (i for i in cfg.impls if runnable[_dtype_name(case.dtype), i]):
                label = (
                    f"conv L{case.layer} {case.input}px B{case.batch} G{case.groups} {case.pass_} "
                    f"{_dtype_name(case.dtype)} {impl}"
                )
                jobs.append((label, lambda c=case, i=impl: run_conv_case(c, i, cfg, device)))
    return jobs


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _header(cfg: BenchConfig, device: torch.device) -> dict:
    config = dataclasses.asdict(cfg)
    return {
        "device": _device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dtype": cfg.dtypes[0],
        "hamfast": hamfast.__version__,
        "python": platform.python_version(),
        "extension": _extension.describe(),
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "cpu_threads": torch.get_num_threads(),
        "ham_step": {
            "loss": "F.cross_entropy (training's class-weighted focal loss needs monai)",
            "optimizer": f"RMSprop lr={HAM_LR}",
            "patterns": "samples spread evenly over the 15 non-empty patterns",
            "widths": list(cfg.widths),
            "hidden": 4,
        },
        "config": config,
        "complete": False,
        "skipped": [],
        "records": [],
    }


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically, so a run cut short leaves a readable file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _progress_line(index: int, total: int, label: str, record: dict) -> str:
    if record["ms_median"] is None:
        return f"[{index}/{total}] {label}: {record.get('note')}"
    return (
        f"[{index}/{total}] {label}: {record['ms_median']:.3f} ms "
        f"(p10 {record['ms_p10']:.3f}, p90 {record['ms_p90']:.3f}), {record['samples_per_s']:.0f} samples/s"
    )


def run(cfg: BenchConfig, out: Optional[Path] = None, log=sys.stderr) -> dict:
    """Run every case of ``cfg``; return the result (and rewrite ``out`` after every record).

    The result has the keys of :func:`_header` with ``records`` filled and ``complete`` True.
    """
    device = torch.device(cfg.device)
    result = _header(cfg, device)
    with _cudnn_benchmark(cfg.cudnn_benchmark):
        jobs = _jobs(cfg, device, result["skipped"])
        for skip in result["skipped"]:
            print(f"skipping {skip['bench']} {skip['impl']} {skip['dtype']}: {skip['note']}", file=log, flush=True)
        for index, (label, make_record) in enumerate(jobs, 1):
            record = make_record()
            result["records"].append(record)
            print(_progress_line(index, len(jobs), label, record), file=log, flush=True)
            if out is not None:
                _write_json(out, result)
    result["complete"] = True
    if out is not None:
        _write_json(out, result)
    return result


# ---- reports ----------------------------------------------------------------------------------

_COMPARED = ("reference", "per_sample")


def _ms_by_case(records: Iterable[dict]) -> dict[tuple, dict[str, Optional[float]]]:
    """Conv records as ``{(dtype, input, B, G, pass, layer): {impl: ms_median}}``, with layer
    ``"all"`` holding the whole-network sum where all four layers have a time."""
    table: dict[tuple, dict[str, Optional[float]]] = {}
    for r in records:
        if r["bench"] == "conv":
            key = (r.get("dtype", "float32"), r["input"], r["B"], r["G"], r["pass"], r["layer"])
            table.setdefault(key, {})[r["impl"]] = r["ms_median"]
    for key in sorted({k[:5] for k in table}):
        per_layer = [table.get(key + (layer,)) for layer in (1, 2, 3, 4)]
        if None in per_layer:
            continue
        impls = set().union(*per_layer)
        table[key + ("all",)] = {
            impl: sum(ms[impl] for ms in per_layer) if all(ms.get(impl) for ms in per_layer) else None
            for impl in impls
        }
    return table


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator and denominator else None


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _sort_key(key: tuple) -> tuple:
    return key[:5] + ((5,) if key[5] == "all" else (key[5],))


def _conv_table(records: list[dict]) -> str:
    lines = [
        "| dtype | input | B | G | pass | layer | fused ms | reference ms | per_sample ms | bound ms "
        "| reference / fused | per_sample / fused | fused / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, ms in sorted(_ms_by_case(records).items(), key=lambda kv: _sort_key(kv[0])):
        fused = ms.get("fused")
        cells = [str(k) for k in key] + [_fmt(ms.get(impl)) for impl in IMPLS]
        cells += [_fmt(_ratio(ms.get(other), fused), 2) for other in _COMPARED]
        cells.append(_fmt(_ratio(fused, ms.get("bound")), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ham_records(records: Iterable[dict]) -> dict[tuple, dict[str, dict]]:
    """HAM-step records as ``{(input, B, G): {backend: record}}``."""
    table: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if r["bench"] == "ham_step":
            table.setdefault((r["input"], r["B"], r["G"]), {})[r["impl"]] = r
    return table


def _ham_table(records: list[dict]) -> str:
    lines = [
        "| input | B | G | fused samples/s | reference samples/s | fused / reference "
        "| fused peak MiB | reference peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, by_impl in sorted(_ham_records(records).items()):
        fused, reference = by_impl.get("fused", {}), by_impl.get("reference", {})
        cells = [str(k) for k in key] + [
            _fmt(fused.get("samples_per_s"), 1),
            _fmt(reference.get("samples_per_s"), 1),
            _fmt(_ratio(fused.get("samples_per_s"), reference.get("samples_per_s")), 2),
            _fmt(fused.get("peak_mem_mb"), 1),
            _fmt(reference.get("peak_mem_mb"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_tables(data: dict) -> str:
    """Markdown: the conv table (ms per impl and ratios per case, plus a whole-network row
    ``layer = all`` per (dtype, input, B, G, pass)) and the HAM-step table."""
    records = data["records"]
    widths = data["ham_step"]["widths"]
    return (
        "Conv layers (ms = median per call; reference / fused and per_sample / fused > 1: fused is faster; "
        "fused / bound: how far fused is from the ungrouped conv).\n\n"
        + _conv_table(records)
        + f"\n\nHAM training step (float32, widths {widths}, samples spread over 15 patterns).\n\n"
        + _ham_table(records)
    )


def _check(description: str, ok: Optional[bool], measured: str) -> dict:
    status = "missing" if ok is None else "pass" if ok else "FAIL"
    return {"target": description, "status": status, "measured": measured}


def target_checks(data: dict) -> list[dict]:
    """The performance targets of issue 6, read from a float32 result.

    Returns:
        ``[{"target": str, "status": "pass" | "FAIL" | "missing", "measured": str}]``.
    """
    ms = _ms_by_case(data["records"])
    whole = {batch: ms.get(("float32", 128, batch, 15, "fwd+bwd", "all"), {}) for batch in (16, 64)}
    checks = []
    speedup = _ratio(whole[16].get("reference"), whole[16].get("fused"))
    checks.append(_check(
        "whole-network conv fwd+bwd, 128 px, B=16, G=15: fused >= 5x faster than reference",
        None if speedup is None else speedup >= 5, f"{_fmt(speedup, 2)}x",
    ))
    vs_ref = _ratio(whole[64].get("reference"), whole[64].get("fused"))
    vs_per_sample = _ratio(whole[64].get("per_sample"), whole[64].get("fused"))
    checks.append(_check(
        "whole-network conv fwd+bwd, 128 px, B=64, G=15: fused >= 2x faster than reference and faster than per_sample",
        None if vs_ref is None or vs_per_sample is None else vs_ref >= 2 and vs_per_sample > 1,
        f"{_fmt(vs_ref, 2)}x vs reference, {_fmt(vs_per_sample, 2)}x vs per_sample",
    ))
    to_bound = {
        key: _ratio(by_impl.get("fused"), by_impl.get("bound"))
        for key, by_impl in ms.items()
        if key[0] == "float32" and key[2] >= 64 and key[4] == "fwd+bwd" and key[5] != "all"
    }
    measured = [(ratio, key) for key, ratio in to_bound.items() if ratio is not None]
    worst = max(measured, default=None)
    checks.append(_check(
        "conv fwd+bwd, every layer, B >= 64: fused within 1.5x of bound",
        None if worst is None or len(measured) < len(to_bound) else worst[0] <= 1.5,
        "–" if worst is None else
        f"worst {worst[0]:.2f}x (input {worst[1][1]}, B={worst[1][2]}, G={worst[1][3]}, layer {worst[1][5]}), "
        f"{len(measured)} of {len(to_bound)} cases measured",
    ))
    for (input_size, batch, groups), by_impl in sorted(_ham_records(data["records"]).items()):
        fused, reference = by_impl.get("fused", {}), by_impl.get("reference", {})
        speedup = _ratio(fused.get("samples_per_s"), reference.get("samples_per_s"))
        peaks = fused.get("peak_mem_mb"), reference.get("peak_mem_mb")
        memory_ok = None if None in peaks else peaks[0] <= peaks[1]
        checks.append(_check(
            f"HAM step, {input_size} px, B={batch}, mixed (G={groups}): fused >= 2x reference samples/s, "
            "peak memory not above reference",
            None if speedup is None else speedup >= 2 and memory_ok is not False,
            f"{_fmt(speedup, 2)}x, peak {_fmt(peaks[0], 1)} vs {_fmt(peaks[1], 1)} MiB",
        ))
    return checks


def merge_results(results: Sequence[dict]) -> dict:
    """One result from several runs (e.g. a full run split by input size): the first one's header,
    everyone's records and skips, complete only if all are."""
    merged = dict(results[0])
    merged["records"] = [r for result in results for r in result["records"]]
    merged["skipped"] = [s for result in results for s in result.get("skipped", [])]
    merged["complete"] = all(result.get("complete") for result in results)
    return merged


def format_report(data: dict) -> str:
    """Markdown for a result: where it ran, the ratio tables and the target checks."""
    head = (
        f"{data['device']}, torch {data['torch']}, CUDA {data['cuda']}, {data['date']}, "
        f"preset {data['config']['preset']}{'' if data.get('complete') else ' (INCOMPLETE run)'}"
    )
    skipped = "".join(
        f"\n- skipped {s['bench']} {s['impl']} {s['dtype']}: {s['note']}" for s in data.get("skipped", [])
    )
    targets = "\n".join(f"- [{c['status']}] {c['target']}: {c['measured']}" for c in target_checks(data))
    return f"{head}{skipped}\n\n{ratio_tables(data)}\n\nTargets (issue 6, set for an H100):\n\n{targets}\n"


# ---- command line -----------------------------------------------------------------------------


def _csv(cast: Callable = str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(cast(item.strip()) for item in text.split(",") if item.strip())

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (used by ``main`` and by the ``hamfast bench`` CLI)."""
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write the result here (needed for a run)")
    parser.add_argument("--table", type=Path, nargs="+", metavar="FILE.json",
                        help="print the ratio tables and target checks of result files (merged), run nothing")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true",
                        help="128 px, B in {16,64}, G in {1,15}, float32, all layers and passes, HAM steps "
                        "(~3 min on an H100)")
    preset.add_argument("--dry-run", action="store_true",
                        help="tiny shapes on CPU: checks the machinery, not the speed")
    parser.add_argument("--device", help="torch device (default: cuda; cpu for --dry-run)")
    parser.add_argument("--impls", type=_csv(), help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--benches", type=_csv(), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--dtypes", type=_csv(), help=f"conv dtypes, subset of {','.join(DTYPES)}")
    parser.add_argument("--inputs", type=_csv(int), help="network input sides in px, e.g. 128,240")
    parser.add_argument("--batches", type=_csv(int), help="conv batch sizes, e.g. 16,64,256")
    parser.add_argument("--groups", type=_csv(int), help="conv group counts, e.g. 15,4,1")
    parser.add_argument("--layers", type=_csv(int), help="conv layers (1-4)")
    parser.add_argument("--passes", type=_csv(), help="fwd and/or fwd+bwd")
    parser.add_argument("--widths", type=_csv(int), help="CBRTiny widths (default 64,128,256,512)")
    parser.add_argument("--ham-batches", type=_csv(int), help="HAM-step batch sizes, e.g. 16,64")
    parser.add_argument("--repeats", type=int, help="timed steps per case (default 50)")
    parser.add_argument("--warmup", type=int, help="untimed steps per case (default 10)")
    parser.add_argument("--max-case-seconds", type=float, help="cap on one case's timed steps (default 2)")
    parser.add_argument("--rotate-mb", type=float, help="MiB of input sets each case cycles through (default 256)")
    parser.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false", default=None,
                        help="leave torch.backends.cudnn.benchmark off")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The preset chosen by ``--quick``/``--dry-run`` (else full) with the given options on top."""
    preset = "dry-run" if args.dry_run else "quick" if args.quick else "full"
    values = dict(PRESETS[preset], preset=preset)
    for field in dataclasses.fields(BenchConfig):
        given = getattr(args, field.name, None)
        if given is not None and field.name != "preset":
            values[field.name] = given
    return BenchConfig(**values)


def _validate(cfg: BenchConfig) -> Optional[str]:
    """A usage error in ``cfg``, or None."""
    for name, allowed in (("impls", IMPLS), ("benches", BENCHES), ("dtypes", DTYPES), ("passes", PASSES)):
        unknown = sorted(set(getattr(cfg, name)) - set(allowed))
        if unknown:
            return f"unknown {name} {unknown}; choose from {list(allowed)}"
    if not set(cfg.layers) <= set(range(1, len(cfg.widths) + 1)):
        return f"layers must lie in 1..{len(cfg.widths)}, got {list(cfg.layers)}"
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device here: pass --device cpu or --dry-run"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hamfast bench`` and ``benchmarks/bench_gpu.py``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="hamfast bench", description="Benchmark the grouped convolution and HAM's training step."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.table is not None:
        print(format_report(merge_results([json.loads(path.read_text()) for path in args.table])))
        return 0
    if args.out is None:
        parser.error("--out FILE.json is required for a run (or --table FILE.json to print a result)")
    cfg = config_from_args(args)
    error = _validate(cfg)
    if error:
        parser.error(error)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = run(cfg, args.out)
    print(f"wrote {len(result['records'])} records to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
