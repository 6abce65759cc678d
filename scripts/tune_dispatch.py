"""Tune the CUDA dispatch table of hamfast's grouped convolution on the GPU at hand.

For each CBRTiny layer shape (paper widths, 5x5 kernels, 128 px input), batch bucket and precision,
times every pass (forward, grad-input, grad-weight) of torch.ops.hamfast.grouped_conv2d* with each
custom-kernel configuration (tensor-core tiles x split-K, or the exact SIMT kernel) and the two cuDNN
formulations (groups=B and per group), forced through HAMFAST_DISPATCH_OVERRIDE, and keeps the
fastest. Times are CUDA-event medians after warm-up; inputs are random normal data (never zeros).

    python scripts/tune_dispatch.py                      # print the table and the timings
    python scripts/tune_dispatch.py --write csrc/cuda/dispatch_table.h   # then rebuild hamfast

Needs a CUDA GPU and hamfast built with its CUDA kernels. A full run takes a few minutes on an
H100/H200 (--quick: batch 64 and tf32/bf16 only). The shipped table has never been tuned.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from pathlib import Path

LAYERS = [(4, 64, 128), (64, 128, 61), (128, 256, 28), (256, 512, 11)]  # (Cin, Cout, input side)
BATCHES = [16, 64, 256]
PRECISIONS = {"tf32": ("float32", True), "float32": ("float32", False), "bf16": ("bfloat16", None),
              "f16": ("float16", None)}
PASSES = ["forward", "grad-input", "grad-weight"]
CPP_PASS = {"forward": "PassKind::kForward", "grad-input": "PassKind::kGradInput", "grad-weight": "PassKind::kGradWeight"}
CPP_PRECISION = {"tf32": "Precision::kTF32", "float32": "Precision::kFloat32", "bf16": "Precision::kBFloat16",
                 "f16": "Precision::kFloat16"}
CPP_TILE = {"128x128": "TileShape::k128x128", "128x64": "TileShape::k128x64", "64x64": "TileShape::k64x64"}


def candidates(precision: str, pass_name: str) -> list[str]:
    splits = [1, 2, 4, 8] if pass_name == "grad-weight" else [1]
    out = ["cudnn_groups_b", "cudnn_per_group"]
    if precision == "float32":
        out += [f"simt:{s}" for s in splits]
    else:
        out += [f"tensor_core:{t}:{s}" for t in CPP_TILE for s in splits]
    return out


def time_ms(fn, warmup: int, reps: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def tune(args) -> list[dict]:
    import torch

    import hamfast  # noqa: F401  (registers torch.ops.hamfast)

    ops = torch.ops.hamfast
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    results = []
    for precision in args.precisions:
        dtype_name, tf32 = PRECISIONS[precision]
        dtype = getattr(torch, dtype_name)
        if tf32 is not None:
            torch.backends.cudnn.allow_tf32 = tf32
        for cin, cout, side in LAYERS:
            for batch in args.batches:
                group = torch.randint(0, args.groups, (batch,), generator=gen)
                order = torch.argsort(group, stable=True).to(device)
                offsets = torch.zeros(args.groups + 1, dtype=torch.int64)
                offsets[1:] = torch.cumsum(torch.bincount(group, minlength=args.groups), 0)
                offsets = offsets.to(device)
                x = torch.randn(batch, cin, side, side, generator=gen).to(device, dtype)
                w = (torch.randn(args.groups, cout, cin, 5, 5, generator=gen) * 0.05).to(device, dtype)
                b = torch.randn(args.groups, cout, generator=gen).to(device, dtype)
                dy = torch.randn(batch, cout, side - 4, side - 4, generator=gen).to(device, dtype)
                calls = {
                    "forward": lambda: ops.grouped_conv2d(x, w, b, order, offsets, 1, 0),
                    "grad-input": lambda: ops.grouped_conv2d_backward_input(dy, w, order, offsets, list(x.shape), 1, 0),
                    "grad-weight": lambda: ops.grouped_conv2d_backward_weight(dy, x, order, offsets, list(w.shape), 1, 0),
                }
                for pass_name in PASSES:
                    timings = {}
                    for cand in candidates(precision, pass_name):
                        os.environ["HAMFAST_DISPATCH_OVERRIDE"] = cand
                        try:
                            timings[cand] = time_ms(calls[pass_name], args.warmup, args.reps)
                        except RuntimeError as exc:  # e.g. out of memory for a large split-K
                            print(f"  {cand}: failed ({str(exc).splitlines()[0]})", file=sys.stderr)
                        finally:
                            del os.environ["HAMFAST_DISPATCH_OVERRIDE"]
                    best = min(timings, key=timings.get)
                    line = " ".join(f"{k}={v:.3f}" for k, v in sorted(timings.items(), key=lambda kv: kv[1]))
                    print(f"{precision:8s} Cin {cin:3d} Cout {cout:3d} H {side:3d} B {batch:3d} {pass_name:11s} "
                          f"best {best} | {line}", flush=True)
                    results.append(dict(pass_name=pass_name, precision=precision, cin=cin, cout=cout, height=side,
                                        batch=batch, best=best, sm_major=props.major, device=props.name))
    return results


def entry_line(r: dict) -> str:
    best = r["best"]
    tile, split = "TileShape::k64x64", 1
    if best.startswith("tensor_core:"):
        _, t, s = best.split(":")
        tile, split, path = CPP_TILE[t], int(s), "Path::kTensorCore"
    elif best.startswith("simt"):
        split, path = int(best.split(":")[1]), "Path::kSimt"
    else:
        path = "Path::kCudnnGroupsB" if best == "cudnn_groups_b" else "Path::kCudnnPerGroup"
    return (f"    {{{CPP_PASS[r['pass_name']]}, {CPP_PRECISION[r['precision']]}, {r['cin']}, {r['cout']}, "
            f"{r['height']}, {r['batch_max']}, {r['sm_major']}, {path}, {tile}, {split}, \"{r['device']}\"}},")


def write_table(path: Path, results: list[dict]) -> None:
    if not results:
        raise SystemExit("no timings to write (every candidate failed?)")
    text = path.read_text()
    begin, end = "// BEGIN TUNED ENTRIES (generated; one line per entry)\n", "// END TUNED ENTRIES"
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: the BEGIN/END TUNED ENTRIES markers are missing")
    # Bucket B: an entry tuned at batch b serves batches up to b; the largest also serves beyond.
    rows = sorted(results, key=lambda r: (r["pass_name"], r["precision"], r["cin"], r["cout"], r["height"], r["batch"]))
    largest = max(r["batch"] for r in rows)
    for r in rows:
        r["batch_max"] = r["batch"] if r["batch"] < largest else 2**31 - 1
    body = "inline constexpr DispatchEntry kTunedEntries[] = {\n" + "\n".join(entry_line(r) for r in rows) + "\n};\n"
    head, rest = text.split(begin)
    text = head + begin + body + end + rest.split(end, 1)[1]
    text = re.sub(r"// THIS SHIPPED TABLE IS EMPTY:.*?to fill it\.\n",
                  f"// Tuned on {rows[0]['device']} by scripts/tune_dispatch.py.\n", text, flags=re.S)
    path.write_text(text)
    print(f"wrote {len(rows)} entries to {path}; rebuild hamfast to use them")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, help="dispatch_table.h to rewrite with the winners")
    parser.add_argument("--quick", action="store_true", help="batch 64 only, tf32 and bf16 only")
    parser.add_argument("--groups", type=int, default=15, help="groups G (default 15)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    args.batches = [64] if args.quick else BATCHES
    args.precisions = ["tf32", "bf16"] if args.quick else list(PRECISIONS)
    if args.write is not None and not args.write.is_file():
        raise SystemExit(f"--write: {args.write} is not a file")
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("tune_dispatch.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    import hamfast  # noqa: F401

    if not torch.ops.hamfast.built_with_cuda():
        raise SystemExit("hamfast was built without its CUDA kernels: rebuild with HAMFAST_BUILD_CUDA=1")
    results = tune(args)
    if args.write is not None:
        write_table(args.write, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
