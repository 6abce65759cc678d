"""Batched training benchmarks (issue 12): training throughput and a whole study, batched vs not.

Two measurements, each a ratio taken in one run of this script:

* ``steps``: training samples per second of R models of one method trained as one stacked model
  (:func:`hamfast.training.batched.train_batched`) against one model trained alone
  (:func:`hamfast.training.train`), both at batch 16, for R in ``--models``. On a GPU this is the
  issue's target "HAM with R = 8 at least 4x the samples/s of one model":

      python benchmarks/batched_training.py steps --device cuda --method ham --models 1 8 16 --preset paper

* ``study``: Experiment A on a synthetic cohort, task by task (``--batch-models 1``, one process,
  as ``hamfast experiment`` ran before batching) against batched (``--batch-models K``): wall
  times, their ratio, and the largest difference between the two studies' test probabilities and
  losses (equal results up to float rounding):

      python benchmarks/batched_training.py study --device cpu --batch-models 4 --iterations 50

Prints a table and writes ``--json`` if given.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_steps(args) -> dict:
    """Samples/s of R stacked models vs one model, on random data of the preset's size."""
    import torch

    from hamfast.experiments.config import PRESETS
    from hamfast.training import TrainConfig, train
    from hamfast.training.batched import train_batched

    preset = PRESETS[args.preset]
    size = args.size or preset["size"] or 240
    widths = tuple(args.widths or preset["widths"])
    gen = torch.Generator().manual_seed(0)
    n = 177  # a BraTS2019 train split
    images = torch.rand(n, 4, size, size, generator=gen)
    available = torch.ones(n, 4, dtype=torch.bool)
    available[n // 2 :, 0] = False  # half the cases miss t1: several patterns per batch
    labels = torch.arange(n) % 3
    data = (images, available, labels)

    def configs(count: int, iterations: int):
        return [TrainConfig(args.method, schedule=args.schedule or preset["schedule"], iterations=iterations, seed=s,
                            widths=widths, batch_size=16, device=args.device, augment=False, recalibrate=False)
                for s in range(count)]

    def seconds_per_step(count: int) -> float:
        def run(iterations):
            begin = time.perf_counter()
            if count == 1:
                train(configs(1, iterations)[0], *data)
            else:
                train_batched(configs(count, iterations), [data] * count)
            _sync(args.device)
            return time.perf_counter() - begin

        run(args.warmup)  # first calls: allocator, kernels, threads
        return (run(args.warmup + args.steps) - run(args.warmup)) / args.steps

    rows = []
    for count in args.models:
        per_step = seconds_per_step(count)
        rows.append({"models": count, "seconds_per_step": per_step, "samples_per_second": 16 * count / per_step})
    base = next((r for r in rows if r["models"] == 1), None)
    print(f"{args.method} ({args.preset} widths {list(widths)}, {size} px, batch 16 per model, {args.device}):")
    print(f"{'models':>7} {'ms/step':>10} {'samples/s':>11} {'vs one':>8}")
    for r in rows:
        ratio = r["samples_per_second"] / base["samples_per_second"] if base else float("nan")
        r["ratio_vs_one"] = ratio
        print(f"{r['models']:>7} {1000 * r['seconds_per_step']:>10.1f} {r['samples_per_second']:>11.1f} {ratio:>7.2f}x")
    return {"kind": "steps", "method": args.method, "preset": args.preset, "size": size, "widths": list(widths),
            "device": args.device, "rows": rows}


def bench_study(args) -> dict:
    """Experiment A task by task vs batched on a synthetic cohort; wall times and result differences."""
    import numpy as np

    from hamfast import data as hdata
    from hamfast.experiments.config import make_settings
    from hamfast.experiments.runner import Samples, run_experiment

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hdata.make_synthetic_brats(tmp / "brats", n_cases=args.cases, seed=0)
        cohort = hdata.open_cohort(tmp / "brats", cache_dir=tmp / "cache", size=96)
        samples = Samples.from_cohort(cohort)
        overrides = dict(runs=args.runs)
        if args.iterations:
            overrides["iterations"] = args.iterations
        settings = make_settings("a", "quick", **overrides)
        walls, results = {}, {}
        order = ["one", "batched"] if not args.batched_first else ["batched", "one"]
        for name in order:
            k = 1 if name == "one" else args.batch_models
            begin = time.perf_counter()
            results[name] = run_experiment(settings, samples, tmp / name, device=args.device, progress=False, batch_models=k)
            walls[name] = time.perf_counter() - begin
    prob_diff = loss_diff = 0.0
    same_iterations = True
    for a, b in zip(results["one"], results["batched"], strict=True):
        same_iterations &= a["iterations"] == b["iterations"]
        loss_diff = max(loss_diff, float(np.abs(np.subtract(a["loss"], b["loss"])).max()))
        for ea, eb in zip(a["evaluations"], b["evaluations"]):
            prob_diff = max(prob_diff, float(np.abs(np.subtract(ea["probs"], eb["probs"])).max()))
    ratio = walls["one"] / walls["batched"]
    print(f"Experiment A, quick preset, {settings.runs} runs, {settings.iterations} iterations, {args.cases} synthetic "
          f"cases, {len(results['one'])} tasks, {args.device}:")
    print(f"  task by task: {walls['one']:.1f} s   batched (K={args.batch_models}): {walls['batched']:.1f} s   "
          f"speed-up {ratio:.2f}x")
    print(f"  same iterations: {same_iterations}; largest difference: test probabilities {prob_diff:.2e}, "
          f"training losses {loss_diff:.2e}")
    return {"kind": "study", "runs": settings.runs, "iterations": settings.iterations, "cases": args.cases,
            "device": args.device, "batch_models": args.batch_models, "wall_seconds": walls, "speedup": ratio,
            "max_prob_diff": prob_diff, "max_loss_diff": loss_diff, "same_iterations": same_iterations}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("steps", help="samples/s of R stacked models vs one")
    p.add_argument("--device", default="cpu")
    p.add_argument("--method", default="ham", choices=("standard", "dropout", "featimpute", "ham"))
    p.add_argument("--schedule", choices=("paper", "mixed"), default=None, help="HAM schedule (default: the preset's)")
    p.add_argument("--models", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--preset", choices=("quick", "paper"), default="quick")
    p.add_argument("--widths", type=int, nargs=4, default=None)
    p.add_argument("--size", type=int, default=None, help="image side (default: the preset's; paper: 240)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    s = sub.add_parser("study", help="Experiment A task by task vs batched")
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch-models", type=int, default=4)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--iterations", type=int, default=None, help="default: the quick preset's 200")
    s.add_argument("--cases", type=int, default=213)
    s.add_argument("--batched-first", action="store_true", help="run the batched study first")
    s.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    out = bench_steps(args) if args.kind == "steps" else bench_study(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
