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
and the performance targets of issue 10 for a result file. The ``fused`` records carry ``explain``:
the path each pass of the op took (:func:`hamfast.ops.explain`).
"""
from hamfast.bench.cases import (
    CONV_IMPLS,
    ConvCase,
    ConvInputs,
    conv_cases,
    conv_step,
    explain_case,
    ham_train_step,
    layer_input_sizes,
    make_conv_inputs,
    mixed_batch,
    spread_groups,
)
from hamfast.bench.cli import add_arguments, main
from hamfast.bench.config import (
    BENCHES,
    HAM_BACKENDS,
    IMPLS,
    PASSES,
    PRESETS,
    SEED,
    BenchConfig,
)
from hamfast.bench.report import (
    format_report,
    merge_results,
    ratio_tables,
    target_checks,
)
from hamfast.bench.runner import fused_unavailable, run
from hamfast.bench.timing import measure, run_conv_case, run_ham_case

__all__ = [
    "BENCHES", "CONV_IMPLS", "HAM_BACKENDS", "IMPLS", "PASSES", "PRESETS", "SEED",
    "BenchConfig", "ConvCase", "ConvInputs",
    "add_arguments", "conv_cases", "conv_step", "explain_case", "format_report", "fused_unavailable", "ham_train_step",
    "layer_input_sizes", "main", "make_conv_inputs", "measure", "merge_results", "mixed_batch",
    "ratio_tables", "run", "run_conv_case", "run_ham_case", "spread_groups", "target_checks",
]
