"""The CPU floor of issue 10: the fused op before (every pass forced to ``loop_parallel``, what the
per-group-loop rule picked for these cases) and after (the cost rule) against ``reference`` (the
Python per-group loop) and ``per_sample`` (the Python groups=B fold), on the cases of
``test_bench_cpu.py``. The four run interleaved round robin, so a loaded machine slows them alike.

    python benchmarks/cpu_floor.py [ROUNDS]          # one JSON line per (layer, pass): median ms
    python benchmarks/cpu_floor.py --paper [ROUNDS]  # issue 21: paper-width layers, fwd+bwd

``--paper`` runs the three paper-width layer shapes of issue 21 (B = 16, fwd+bwd with x requiring
grad) with the fused op autotuned (``HAMFAST_AUTOTUNE=on``: the warm-up rounds measure), the fused op
on the fixed cost rule (``off``) and the reference, interleaved; ``reference / fused`` >= 1 is the
floor.
"""
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hamfast import bench  # noqa: E402

NARROW_WIDTHS = (16, 32, 32, 64)
INPUT, BATCH, GROUPS, INPUT_SETS, WARMUP = 128, 16, 15, 4, 2
IMPLS = {  # name: (bench impl, environment)
    "fused_before": ("fused", {"HAMFAST_CPU_PATH": "loop_parallel"}),
    "fused_after": ("fused", {"HAMFAST_CPU_PATH": "auto", "HAMFAST_AUTOTUNE": "off"}),
    "reference": ("reference", {}),
    "per_sample": ("per_sample", {}),
}
PAPER_IMPLS = {
    "fused_autotuned": ("fused", {"HAMFAST_CPU_PATH": "auto", "HAMFAST_AUTOTUNE": "on"}),
    "fused_rule": ("fused", {"HAMFAST_CPU_PATH": "auto", "HAMFAST_AUTOTUNE": "off"}),
    "reference": ("reference", {}),
}
# (layer, Cin, Cout, layer input px, G) of issue 21's CPU measurement; B = 16, 128 px network input.
PAPER_CASES = ((2, 64, 128, 61, 5), (1, 4, 64, 128, 15), (4, 256, 512, 11, 15))


def cases(paper: bool):
    if paper:
        for layer, cin, cout, size, groups in PAPER_CASES:
            yield bench.ConvCase(layer, INPUT, size, cin, cout, BATCH, groups, "fwd+bwd")
        return
    channels = (4,) + NARROW_WIDTHS
    sizes = bench.layer_input_sizes(INPUT, len(NARROW_WIDTHS))
    for layer, pass_ in itertools.product((1, 2, 3, 4), bench.PASSES):
        yield bench.ConvCase(layer, INPUT, sizes[layer - 1], channels[layer - 1], channels[layer], BATCH, GROUPS, pass_)


def main(rounds: int, paper: bool) -> None:
    impls = PAPER_IMPLS if paper else IMPLS
    for case in cases(paper):
        layer, pass_ = case.layer, case.pass_
        generator = torch.Generator().manual_seed(bench.SEED)
        inputs = {k: itertools.cycle([bench.make_conv_inputs(case, impl, generator) for _ in range(INPUT_SETS)])
                  for k, (impl, _) in impls.items()}
        steps = {k: bench.conv_step(impl, pass_) for k, (impl, _) in impls.items()}
        times = {k: [] for k in impls}
        for round_ in range(rounds + WARMUP):
            for k, (_, env) in impls.items():
                os.environ.update(env)
                inp = next(inputs[k])
                started = time.perf_counter()
                steps[k](inp)
                if round_ >= WARMUP:
                    times[k].append((time.perf_counter() - started) * 1e3)
        os.environ.update({"HAMFAST_CPU_PATH": "auto", "HAMFAST_AUTOTUNE": "on"})
        medians = {k: statistics.median(v) for k, v in times.items()}
        record = {
            "layer": layer, "pass": pass_, "cin": case.cin, "cout": case.cout, "size": case.size,
            "groups": case.groups, "load": round(os.getloadavg()[0], 2),
            "median_ms": {k: round(v, 3) for k, v in medians.items()},
        }
        if paper:
            record["reference_over"] = {k: round(medians["reference"] / medians[k], 3) for k in impls if k != "reference"}
            record["explain"] = bench.explain_case(case, torch.device("cpu"))  # the autotuned choice, kept
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    paper = "--paper" in args
    args = [a for a in args if a != "--paper"]
    main(int(args[0]) if args else 7, paper)
