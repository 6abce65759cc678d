"""The CPU floor of issue 10: the fused op before (every pass forced to ``loop_parallel``, what the
per-group-loop rule picked for these cases) and after (the cost rule) against ``reference`` (the
Python per-group loop) and ``per_sample`` (the Python groups=B fold), on the cases of
``test_bench_cpu.py``. The four run interleaved round robin, so a loaded machine slows them alike.

    python benchmarks/cpu_floor.py [ROUNDS]      # one JSON line per (layer, pass): median ms
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
IMPLS = {  # name: (bench impl, HAMFAST_CPU_PATH)
    "fused_before": ("fused", "loop_parallel"),
    "fused_after": ("fused", "auto"),
    "reference": ("reference", "auto"),
    "per_sample": ("per_sample", "auto"),
}


def main(rounds: int) -> None:
    channels = (4,) + NARROW_WIDTHS
    sizes = bench.layer_input_sizes(INPUT, len(NARROW_WIDTHS))
    for layer, pass_ in itertools.product((1, 2, 3, 4), bench.PASSES):
        case = bench.ConvCase(layer, INPUT, sizes[layer - 1], channels[layer - 1], channels[layer], BATCH, GROUPS, pass_)
        generator = torch.Generator().manual_seed(bench.SEED)
        inputs = {k: itertools.cycle([bench.make_conv_inputs(case, impl, generator) for _ in range(INPUT_SETS)])
                  for k, (impl, _) in IMPLS.items()}
        steps = {k: bench.conv_step(impl, pass_) for k, (impl, _) in IMPLS.items()}
        times = {k: [] for k in IMPLS}
        for round_ in range(rounds + WARMUP):
            for k, (_, path) in IMPLS.items():
                os.environ["HAMFAST_CPU_PATH"] = path
                inp = next(inputs[k])
                started = time.perf_counter()
                steps[k](inp)
                if round_ >= WARMUP:
                    times[k].append((time.perf_counter() - started) * 1e3)
        os.environ["HAMFAST_CPU_PATH"] = "auto"
        print(json.dumps({
            "layer": layer, "pass": pass_, "load": round(os.getloadavg()[0], 2),
            "median_ms": {k: round(statistics.median(v), 3) for k, v in times.items()},
        }), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
