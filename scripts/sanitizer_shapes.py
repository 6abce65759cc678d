"""Tiny grouped convolutions through every own-kernel configuration, for compute-sanitizer.

Runs forward and backward (grad-input, grad-weight, bias) of hamfast.ops.grouped_conv2d on tiny
shapes for every tile (128x128, 128x64, 64x64) with split-K 1 and 3, every dtype (float32 as TF32
and exact SIMT, float64 SIMT, bfloat16, float16 on tensor cores), Cin 4 (element-wise loads for
16-bit) and 8 (16-byte cp.async), each forced with HAMFAST_DISPATCH_OVERRIDE (autotune off), so
`compute-sanitizer --tool racecheck|synccheck python scripts/sanitizer_shapes.py` checks every
kernel instantiation the dispatcher can pick. With Cin 8 the weights are laid out as HAM generates
them ([Cout, kh, kw, Cin] memory per group, the groups 8 elements further apart than dense), so the
kernels read them in place through the group stride; with Cin 4 they are contiguous (copied once).
K = 25 * Cin >= 100 gives >= 4 k-tiles, so the cp.async pipeline wraps around its stages. With
every gradient asked for, the forward keeps its NHWC x for the backward and grad-weight also sums
the bias gradient (its shared-memory tree included). Prints one line per configuration and
"sanitizer shapes ok: N configurations" at the end; exits 1 if any result is wrong (checked
against the reference).

    python scripts/sanitizer_shapes.py [--device cuda|cpu] [--list]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # an in-place build, not installed

TILES = ("128x128", "128x64", "64x64")
SPLITS = (1, 3)
# (name, torch dtype, TF32 allowed, override prefix)
DTYPES = (("tf32", "float32", True, "tensor_core"), ("float32", "float32", False, "simt"),
          ("float64", "float64", False, "simt"), ("bf16", "bfloat16", None, "tensor_core"),
          ("f16", "float16", None, "tensor_core"))
CINS = (4, 8)


def placed(w):
    """``w`` [G, Cout, Cin, kh, kw] with the same values in HAM's memory layout (a leaf for autograd)."""
    g, cout, cin, kh, kw = w.shape
    n = cout * kh * kw * cin
    rows = w.new_zeros(g, n + 8)
    rows[:, :n] = w.permute(0, 1, 3, 4, 2).reshape(g, n)
    return rows[:, :n].view(g, cout, kh, kw, cin).permute(0, 1, 4, 2, 3).detach()


def configurations() -> list[tuple[str, str, int, str]]:
    """(dtype name, override, Cin, label) for every forced kernel configuration."""
    out = []
    for name, _, _, kind in DTYPES:
        overrides = [f"simt:{s}" for s in SPLITS] if kind == "simt" else \
            [f"tensor_core:{t}:{s}" for t in TILES for s in SPLITS]
        for override in overrides:
            for cin in CINS:
                out.append((name, override, cin, f"{name} {override} Cin={cin}"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    args = parser.parse_args(argv)
    configs = configurations()
    if args.list:
        print("\n".join(c[3] for c in configs))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("sanitizer shapes: skipped (no GPU)")
        return 0
    from hamfast.ops import grouped_conv2d, grouped_conv2d_reference

    os.environ["HAMFAST_AUTOTUNE"] = "off"  # the override decides; nothing is timed under the sanitizer
    dtypes = {name: (getattr(torch, dt), tf32) for name, dt, tf32, _ in DTYPES}
    gen = torch.Generator().manual_seed(0)
    group = torch.tensor([2, 0, 2, 1, 0])
    bad = 0
    for name, override, cin, label in configs:
        dtype, tf32 = dtypes[name]
        if tf32 is not None and args.device == "cuda":
            torch.backends.cudnn.allow_tf32 = tf32
        os.environ["HAMFAST_DISPATCH_OVERRIDE"] = override
        # Small integers: every sum is exact in each dtype, so the result must equal the reference.
        x = torch.randint(-2, 3, (5, cin, 12, 12), generator=gen).to(args.device, dtype).requires_grad_()
        w = torch.randint(-2, 3, (3, 24, cin, 5, 5), generator=gen).to(args.device, dtype)
        w = (placed(w) if cin == 8 else w).requires_grad_()
        b = torch.randint(-2, 3, (3, 24), generator=gen).to(args.device, dtype).requires_grad_()
        g = group.to(args.device)
        dy = torch.randint(-1, 2, (5, 24, 8, 8), generator=gen).to(args.device, dtype)
        out = grouped_conv2d(x, w, b, g)
        grads = torch.autograd.grad(out, (x, w, b), dy)
        del os.environ["HAMFAST_DISPATCH_OVERRIDE"]
        ref = grouped_conv2d_reference(x.double(), w.double(), b.double(), g)
        ref_grads = torch.autograd.grad(ref, (x, w, b), dy.double())
        # Sums are exact in float32 accumulation, so each result is the exact value rounded to its dtype.
        ok = all(torch.equal(a.double(), r.to(a.dtype).double()) for a, r in zip((out, *grads), (ref, *ref_grads)))
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {label}", flush=True)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(f"sanitizer shapes {'ok' if bad == 0 else 'FAILED'}: {len(configs)} configurations, {bad} wrong")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
