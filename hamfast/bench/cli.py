"""The command line of ``hamfast bench`` and ``benchmarks/bench_gpu.py``."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from hamfast.bench.config import BENCHES, DTYPES, IMPLS, PASSES, PRESETS, BenchConfig
from hamfast.bench.report import format_report, load_result, merge_results
from hamfast.bench.runner import run
from hamfast.files import OutputPathError, check_output_file


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
                        help="128 px, B in {16,64}, G in {1,15}, float32, all layers and passes, HAM steps, "
                        "plus bfloat16 fwd+bwd at G=15; 30 repeats (~90 s on an H200)")
    preset.add_argument("--dry-run", action="store_true",
                        help="tiny shapes on CPU: checks the machinery, not the speed")
    parser.add_argument("--device", help="torch device (default: cuda; cpu for --dry-run)")
    parser.add_argument("--impls", type=_csv(), help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--benches", type=_csv(), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--dtypes", type=_csv(), help=f"conv dtypes, subset of {','.join(DTYPES)}")
    parser.add_argument("--extra-dtypes", type=_csv(),
                        help="dtypes measured on the target cases only (fwd+bwd, first of --groups); "
                        "--quick: bfloat16; '' for none")
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
    for name, allowed in (
        ("impls", IMPLS), ("benches", BENCHES), ("dtypes", DTYPES), ("extra_dtypes", DTYPES), ("passes", PASSES)
    ):
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only errors and the result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.table is not None:
        try:
            results = [load_result(path) for path in args.table]
        except ValueError as exc:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 2
        print(format_report(merge_results(results)))
        return 0
    if args.out is None:
        parser.error("--out FILE.json is required for a run (or --table FILE.json to print a result)")
    cfg = config_from_args(args)
    error = _validate(cfg)
    if error:
        parser.error(error)
    try:
        check_output_file(args.out, "--out")  # before the minutes of benchmarking, not after
    except OutputPathError as exc:
        parser.error(str(exc))
    with open(os.devnull, "w") if args.quiet else contextlib.nullcontext(sys.stderr) as log:
        result = run(cfg, args.out, log=log)
    print(f"wrote {len(result['records'])} records to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
