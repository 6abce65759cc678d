"""Per-pass candidate timings of hamfast's grouped convolution, from its run-time autotuner.

For each CBRTiny layer (paper widths 4->64->128->256->512, 5x5 kernels, 128 px input, so layer
inputs of 128/61/28/11 px), batch size and precision, clears the autotune cache, runs forward,
grad-input and grad-weight once, and reads what the first call measured (torch.ops.hamfast
.autotune_report): the median ms of every candidate (own kernel tiles and split-K, cuDNN groups=B,
cuDNN per group; cuDNN with cudnn.benchmark on, as the benchmark runs it), the winner, the fixed
heuristic's choice (the first candidate timed) and the ratios that matter:
    winner_vs_cudnn    winner ms / best cuDNN ms        (<= 1: the floor holds, by construction)
    own_vs_cudnn       best own kernel ms / best cuDNN  (< 1: the own kernels are worth having)
    heuristic_vs_winner the fixed choice's ms / winner  (what HAMFAST_AUTOTUNE=off costs)

    python scripts/autotune_report.py --out autotune.json [--batches 16,64] [--dtypes tf32,bf16]
    python scripts/autotune_report.py --device cpu --out dry.json   # tiny shapes, the CPU tuner

Without a GPU (and --device cuda, the default) it writes {"skipped": "..."} and exits 0. Results
are written after every case, so a time limit leaves what was measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # an in-place build, not installed

LAYERS = [(4, 64, 128), (64, 128, 61), (128, 256, 28), (256, 512, 11)]  # (Cin, Cout, input side)
DRY_LAYERS = [(3, 4, 12), (4, 6, 8)]
DTYPES = {"tf32": ("float32", True), "float32": ("float32", False), "bf16": ("bfloat16", None),
          "f16": ("float16", None)}
PASSES = ("forward", "grad-input", "grad-weight")


def summarize(entry: dict, cuda: bool = True) -> dict:
    """Ratios of one pass's measurement; entry = {"winner": name, "median_ms": {name: ms | None}}
    in the order the autotuner timed them, which on CUDA puts the fixed heuristic's choice first
    (the CPU lists its paths in a fixed order: no heuristic fields there)."""
    ms = {k: v for k, v in entry["median_ms"].items() if v is not None}
    heuristic = next(iter(entry["median_ms"])) if cuda else None
    cudnn = min((v for k, v in ms.items() if k.startswith("cudnn")), default=None)
    own = {k: v for k, v in ms.items() if not k.startswith("cudnn")}
    best_own = min(own, key=own.get) if own else None
    winner_ms = ms.get(entry["winner"])

    def ratio(a, b):
        return None if a is None or b is None or b <= 0 else round(a / b, 3)

    return {
        "winner": entry["winner"], "winner_ms": winner_ms, "heuristic": heuristic,
        "heuristic_ms": ms.get(heuristic), "best_own": best_own, "best_own_ms": own.get(best_own),
        "best_cudnn_ms": cudnn, "winner_vs_cudnn": ratio(winner_ms, cudnn),
        "own_vs_cudnn": ratio(own.get(best_own), cudnn), "heuristic_vs_winner": ratio(ms.get(heuristic), winner_ms),
        "failed": sorted(k for k, v in entry["median_ms"].items() if v is None), "median_ms": entry["median_ms"],
    }


def measure_case(torch, ops, device, dtype, cin, cout, side, batch, groups, gen) -> dict:
    """Runs the three passes once with the cache cleared; returns {pass: summarize(...)}."""
    group = torch.randint(0, groups, (batch,), generator=gen)
    order = torch.argsort(group, stable=True).to(device)
    counts = torch.bincount(group, minlength=groups)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)]).to(device)
    x = torch.randn(batch, cin, side, side, generator=gen).to(device, dtype)
    w = (torch.randn(groups, cout, cin, 5, 5, generator=gen) * 0.05).to(device, dtype)
    b = torch.randn(groups, cout, generator=gen).to(device, dtype)
    dy = torch.randn(batch, cout, side - 4, side - 4, generator=gen).to(device, dtype)
    ops.autotune_clear()
    ops.grouped_conv2d(x, w, b, order, offsets, 1, 0)
    ops.grouped_conv2d_backward_input(dy, w, order, offsets, list(x.shape), 1, 0)
    ops.grouped_conv2d_backward_weight(dy, x, order, offsets, list(w.shape), 1, 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    report = json.loads(ops.autotune_report())
    out = {}
    for key, entry in report.items():
        pass_name = next((p for p in PASSES if f" {p} " in key), None)
        if pass_name is not None:
            out[pass_name] = {"signature": key, **summarize(entry, cuda=key.startswith("cuda "))}
    return out


def run(args) -> dict:
    import torch

    device = torch.device(args.device)
    header = {"script": "scripts/autotune_report.py", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "torch": torch.__version__, "device": args.device}
    if device.type == "cuda" and not torch.cuda.is_available():
        return {**header, "skipped": "no GPU: torch.cuda.is_available() is False"}
    import hamfast  # noqa: F401  (registers torch.ops.hamfast)
    from hamfast import _extension

    if not _extension.available():
        return {**header, "skipped": f"hamfast._C is not built: {_extension._load_error}"}
    if device.type == "cuda" and not _extension.has_cuda_kernels():
        return {**header, "skipped": "hamfast was built without its CUDA kernels"}
    if device.type == "cuda":
        header["device"] = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True  # as the benchmark runs; the tuner sets it for its cuDNN candidates anyway
    ops = torch.ops.hamfast
    gen = torch.Generator().manual_seed(0)
    result = {**header, "groups": args.groups, "cases": []}
    layers = DRY_LAYERS if device.type == "cpu" else LAYERS
    for name in args.dtypes:
        dtype_name, tf32 = DTYPES[name]
        if tf32 is not None and device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = tf32
        for layer, (cin, cout, side) in enumerate(layers, start=1):
            for batch in args.batches:
                case = {"dtype": name, "layer": layer, "cin": cin, "cout": cout, "input": side, "B": batch}
                started = time.perf_counter()
                try:
                    case["passes"] = measure_case(torch, ops, device, getattr(torch, dtype_name), cin, cout, side,
                                                  batch, args.groups, gen)
                except RuntimeError as exc:  # one case failing (e.g. out of memory) must not lose the others
                    case["error"] = str(exc).splitlines()[0]
                case["seconds"] = round(time.perf_counter() - started, 2)
                result["cases"].append(case)
                for pass_name, s in case.get("passes", {}).items():
                    print(f"{name:7s} L{layer} B={batch:<3d} {pass_name:11s} winner {s['winner']:22s} "
                          f"{s['winner_ms']} ms | own/cuDNN {s['own_vs_cudnn']} | heuristic/winner "
                          f"{s['heuristic_vs_winner']}", flush=True)
                if "error" in case:
                    print(f"{name:7s} L{layer} B={batch}: {case['error']}", flush=True)
                if args.out:
                    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="JSON file to write (rewritten after every case)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (tiny shapes: checks the script)")
    parser.add_argument("--batches", default=None, help="comma-separated (default 16,64; cpu: 4)")
    parser.add_argument("--dtypes", default=None, help=f"subset of {','.join(DTYPES)} (default tf32,bf16; cpu: float32)")
    parser.add_argument("--groups", type=int, default=15, help="groups G (default 15; cpu: 3)")
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"
    args.batches = [int(b) for b in (args.batches or ("4" if cpu else "16,64")).split(",") if b]
    args.dtypes = [d for d in (args.dtypes or ("float32" if cpu else "tf32,bf16")).split(",") if d]
    if cpu and args.groups == 15:
        args.groups = 3
    unknown = set(args.dtypes) - set(DTYPES)
    if unknown:
        parser.error(f"--dtypes: unknown {sorted(unknown)}; choose from {','.join(DTYPES)}")
    result = run(args)
    if "skipped" in result:
        print(f"autotune_report: skipped ({result['skipped']})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
