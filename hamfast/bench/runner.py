"""A whole benchmark run: the list of jobs, the JSON header, progress, the result file."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

import hamfast
from hamfast import _extension
from hamfast.bench.cases import ConvCase, conv_cases, conv_step, explain_case, make_conv_inputs
from hamfast.bench.config import DTYPES, HAM_BACKENDS, HAM_LR, SEED, BenchConfig
from hamfast.bench.timing import dtype_label, failure_note, run_conv_case, run_ham_case
from hamfast.files import write_json_atomic


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
        return failure_note(exc)
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
        dtypes = dict.fromkeys(cfg.dtypes + cfg.extra_dtypes)
        for dtype_name, impl in itertools.product(dtypes, cfg.impls):
            reason = _unsupported(impl, DTYPES[dtype_name], device)
            runnable[dtype_name, impl] = reason is None
            if reason:
                skipped.append({"bench": "conv", "impl": impl, "dtype": dtype_name, "note": reason})
        for case in conv_cases(cfg):
            for impl in (i for i in cfg.impls if runnable[dtype_label(case.dtype), i]):
                label = (
                    f"conv L{case.layer} {case.input}px B{case.batch} G{case.groups} {case.pass_} "
                    f"{dtype_label(case.dtype)} {impl}"
                )
                jobs.append((label, lambda c=case, i=impl: _with_explain(run_conv_case(c, i, cfg, device), c, i, device)))
    return jobs


def _with_explain(record: dict, case: ConvCase, impl: str, device: torch.device) -> dict:
    """The fused op's record gets ``explain``: which path each of its passes took (hamfast.ops.explain)."""
    if impl == "fused":
        try:
            record["explain"] = explain_case(case, device)
        except (RuntimeError, NotImplementedError) as exc:  # e.g. a CUDA build without its explain
            record["explain"] = failure_note(exc)
    return record


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
        line = f"[{index}/{total}] {label}: {record.get('note')}"
    else:
        line = (
            f"[{index}/{total}] {label}: {record['ms_median']:.3f} ms "
            f"(p10 {record['ms_p10']:.3f}, p90 {record['ms_p90']:.3f}), {record['samples_per_s']:.0f} samples/s"
        )
    if record.get("explain"):
        line += "".join(f"\n    {text}" for text in record["explain"].strip().splitlines())
    return line


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
                write_json_atomic(out, result, indent=1)
    result["complete"] = True
    if out is not None:
        write_json_atomic(out, result, indent=1)
    return result


