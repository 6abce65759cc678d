"""CPU benchmarks (pytest-benchmark): the fused C++ op against the per-group loop (``reference``) and
the groups=B fold (``per_sample``), and HAM's training step.

Sized for a small CPU (2 cores, under ~2 minutes in all): CBRTiny's narrow widths (16, 32, 32, 64),
a 128x128 input, B = 16 spread over G = 15 groups. Not part of the default ``pytest`` run::

    pytest benchmarks/ --benchmark-columns=median,iqr,rounds

Each benchmark cycles through several input sets (a fresh one per round) so caches do not flatter.
"""
import itertools

import pytest
import torch

from hamfast import bench
from hamfast.models import HAM

NARROW_WIDTHS = (16, 32, 32, 64)
INPUT = 128
BATCH = 16
GROUPS = 15
INPUT_SETS = 4
CPU = torch.device("cpu")
LAYER_ROUNDS = {1: 20, 2: 30, 3: 50, 4: 50}  # fwd+bwd rounds, fewer where one call takes longer
FWD_ROUNDS_FACTOR = 3  # a forward takes about a third of fwd+bwd


def _conv_case(layer: int, pass_: str) -> bench.ConvCase:
    channels = (4,) + NARROW_WIDTHS
    size = bench.layer_input_sizes(INPUT, len(NARROW_WIDTHS))[layer - 1]
    return bench.ConvCase(layer, INPUT, size, channels[layer - 1], channels[layer], BATCH, GROUPS, pass_)


def _rotating(items: list):
    """A pytest-benchmark ``setup``: each round gets the next item as the target's argument."""
    cycle = itertools.cycle(items)
    return lambda: ((next(cycle),), {})


def _skip_without_fused(impl: str) -> None:
    reason = bench.fused_unavailable(CPU)
    if impl == "fused" and reason:
        pytest.skip(f"fused op unavailable: {reason}")


@pytest.mark.parametrize("impl", ["fused", "reference", "per_sample"])
@pytest.mark.parametrize("pass_", bench.PASSES)
@pytest.mark.parametrize("layer", sorted(LAYER_ROUNDS), ids=lambda layer: f"layer{layer}")
def test_conv(benchmark, layer, pass_, impl):
    _skip_without_fused(impl)
    case = _conv_case(layer, pass_)
    generator = torch.Generator().manual_seed(bench.SEED)
    input_sets = [bench.make_conv_inputs(case, impl, generator) for _ in range(INPUT_SETS)]
    benchmark.group = f"conv layer {layer} {pass_}: {case.cin}->{case.cout}, {case.size} px, B={BATCH}, G={GROUPS}"
    benchmark.extra_info.update(impl=impl, gflop=case.flops() / 1e9)
    if impl == "fused":
        benchmark.extra_info["explain"] = bench.explain_case(case, CPU)
    rounds = LAYER_ROUNDS[layer] * (FWD_ROUNDS_FACTOR if pass_ == "fwd" else 1)
    benchmark.pedantic(bench.conv_step(impl, pass_), setup=_rotating(input_sets), rounds=rounds, warmup_rounds=2)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_ham_step(benchmark, backend):
    _skip_without_fused(backend)
    torch.manual_seed(bench.SEED)
    model = HAM(widths=NARROW_WIDTHS, backend=backend).train()
    generator = torch.Generator().manual_seed(bench.SEED)
    batches = [bench.mixed_batch(BATCH, INPUT, generator) for _ in range(INPUT_SETS)]
    benchmark.group = f"ham_step narrow {NARROW_WIDTHS}, {INPUT} px, B={BATCH} mixed patterns"
    benchmark.extra_info.update(impl=backend)
    benchmark.pedantic(bench.ham_train_step(model), setup=_rotating(batches), rounds=20, warmup_rounds=2)
