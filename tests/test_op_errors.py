"""Every argument check of the compiled ops raises a Python exception; none can take the process down.

The three ops (``torch.ops.hamfast.grouped_conv2d``, ``_backward_input``, ``_backward_weight``) are
called directly, bypassing hamfast.ops' Python checks, with one bad argument each. A badly built
extension turns such an error into SIGSEGV (issue 9), so the calls run in a child process: one per
device, which prints one line per check before and after it, and each check is a test of its own
here (a crash fails the check it happened in, and the ones after it, by name).

Plans on CUDA are not read by the C++ checks (a sync per layer): those checks run through
hamfast.ops.grouped_conv2d, which validates a hand-made plan once (the "python" cases).
"""
import json
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from hamfast import _extension

HAS_CUDA = torch.cuda.is_available() and _extension.has_cuda_kernels()
B, G, CIN, COUT, H, K = 4, 3, 3, 5, 8, 3

BOTH, CPU_ONLY = ("cpu", "cuda"), ("cpu",)
R = "RuntimeError"


def environment(device):
    """The tensors and ops the checks use, on ``device`` (built in the child process only)."""
    from hamfast.ops import GroupPlan, grouped_conv2d, make_group_plan

    gen = torch.Generator().manual_seed(0)
    e = SimpleNamespace(GroupPlan=GroupPlan, grouped_conv2d=grouped_conv2d)
    e.x = torch.randn(B, CIN, H, H, generator=gen).to(device)
    e.weight = torch.randn(G, COUT, CIN, K, K, generator=gen).to(device)
    e.bias = torch.randn(G, COUT, generator=gen).to(device)
    e.group = torch.tensor([2, 0, 2, 1], device=device)
    plan = make_group_plan(e.group, G)
    e.order, e.offsets = plan.order, plan.offsets
    ho = H - K + 1
    e.grad_out = torch.randn(B, COUT, ho, ho, generator=gen).to(device)
    e.fwd = torch.ops.hamfast.grouped_conv2d
    e.bwd_in = torch.ops.hamfast.grouped_conv2d_backward_input
    e.bwd_w = torch.ops.hamfast.grouped_conv2d_backward_weight
    e.in_size, e.w_size = list(e.x.shape), list(e.weight.shape)
    e.dup_order = e.order.clone()
    e.dup_order[1] = e.dup_order[0]
    e.oob_order = e.order.clone()
    e.oob_order[-1] = B + 3
    e.decreasing = torch.tensor([0, 3, 2, B], device=device)
    return e


def cases(e):
    """name -> (call, exception type name, message regex, devices where it is checked).

    ``e`` is an :func:`environment` (or None to list the cases: the calls are not run then). The
    plan's values are read by the C++ checks on CPU only (CPU_ONLY); on CUDA through Python.
    """
    return {
        # forward: tensors
        "fwd wrong Cin": (lambda: e.fwd(e.x[:, :2], e.weight, e.bias, e.order, e.offsets, 1, 0), R, "input channels", BOTH),
        "fwd x rank": (lambda: e.fwd(e.x[0], e.weight, e.bias, e.order, e.offsets, 1, 0), R, "x must be 4-D", BOTH),
        "fwd weight rank": (lambda: e.fwd(e.x, e.weight[0], e.bias, e.order, e.offsets, 1, 0), R, "weight must be 5-D", BOTH),
        "fwd integer x": (lambda: e.fwd(e.x.long(), e.weight.long(), None, e.order, e.offsets, 1, 0), R, "floating point", BOTH),
        "fwd weight dtype": (lambda: e.fwd(e.x, e.weight.double(), e.bias, e.order, e.offsets, 1, 0), R, "has dtype", BOTH),
        "fwd bias dtype": (lambda: e.fwd(e.x, e.weight, e.bias.double(), e.order, e.offsets, 1, 0), R, "has dtype", BOTH),
        "fwd bias shape": (lambda: e.fwd(e.x, e.weight, e.bias[:2], e.order, e.offsets, 1, 0), R, r"bias must be \[G, Cout\]", BOTH),
        "fwd weight on other device": (
            lambda: e.fwd(e.x, e.weight.to("meta"), e.bias, e.order, e.offsets, 1, 0), R, "is on", BOTH),
        "fwd x on meta, weight not": (
            lambda: e.fwd(e.x.to("meta"), e.weight, e.bias, e.order, e.offsets, 1, 0), R, "is on", BOTH),
        "fwd kernel larger than input": (lambda: e.fwd(e.x[:, :, :2, :2], e.weight, e.bias, e.order, e.offsets, 1, 0), R,
                                         "does not fit", BOTH),
        # forward: stride and padding
        "fwd stride 0": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets, 0, 0), R, "stride must be >= 1", BOTH),
        "fwd stride 1.5": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets, 1.5, 0), R, "type 'int'", BOTH),
        "fwd negative padding": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets, 1, -1), R, "padding must be >= 0", BOTH),
        "fwd padding 2**62": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets, 1, 2**62), R, r"larger than 2\^63", BOTH),
        "fwd padding 2**40": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets, 1, 2**40), R, r"more than 2\^63 - 1", BOTH),
        # forward: the plan's shape, dtype, device
        "fwd short offsets": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets[:-1], 1, 0), R, r"offsets must be int64 \[G \+ 1\]", BOTH),
        "fwd int32 order": (lambda: e.fwd(e.x, e.weight, e.bias, e.order.int(), e.offsets, 1, 0), R, "order must be int64", BOTH),
        "fwd short order": (lambda: e.fwd(e.x, e.weight, e.bias, e.order[:-1], e.offsets, 1, 0), R, "order must be int64", BOTH),
        "fwd plan on other device": (
            lambda: e.fwd(e.x, e.weight, e.bias, e.order.to("meta"), e.offsets, 1, 0), R, "is on", BOTH),
        # forward: the plan's values (read by the C++ checks on CPU only)
        "fwd shifted offsets": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.offsets + 1, 1, 0), R, "offsets must run from 0", CPU_ONLY),
        "fwd decreasing offsets": (lambda: e.fwd(e.x, e.weight, e.bias, e.order, e.decreasing, 1, 0), R, "must not decrease", CPU_ONLY),
        "fwd order lists a sample twice": (lambda: e.fwd(e.x, e.weight, e.bias, e.dup_order, e.offsets, 1, 0), R, "listed twice", CPU_ONLY),
        "fwd order out of range": (lambda: e.fwd(e.x, e.weight, e.bias, e.oob_order, e.offsets, 1, 0), R, "out of range", CPU_ONLY),
        # backward_input
        "bwd_input grad_out shape": (lambda: e.bwd_in(e.grad_out[:, :2], e.weight, e.order, e.offsets, e.in_size, 1, 0), R,
                                     "grad_out has shape", BOTH),
        "bwd_input wrong Cin": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets, [B, 2, H, H], 1, 0), R,
                                "input channels", BOTH),
        "bwd_input input_size rank": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets, [B, CIN, H], 1, 0), R,
                                      "x must be 4-D", BOTH),
        "bwd_input negative size": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets, [B, CIN, -H, H], 1, 0), R,
                                    "must not be negative", BOTH),
        "bwd_input weight dtype": (lambda: e.bwd_in(e.grad_out, e.weight.double(), e.order, e.offsets, e.in_size, 1, 0), R,
                                   "has dtype", BOTH),
        "bwd_input kernel larger than input": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets, [B, CIN, 2, 2], 1, 0),
                                               R, "does not fit", BOTH),
        "bwd_input padding 2**62": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets, e.in_size, 1, 2**62), R,
                                    r"larger than 2\^63", BOTH),
        "bwd_input short offsets": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets[:-1], e.in_size, 1, 0), R,
                                    "offsets must be int64", BOTH),
        "bwd_input shifted offsets": (lambda: e.bwd_in(e.grad_out, e.weight, e.order, e.offsets + 1, e.in_size, 1, 0), R,
                                      "offsets must run from 0", CPU_ONLY),
        "bwd_input order lists a sample twice": (lambda: e.bwd_in(e.grad_out, e.weight, e.dup_order, e.offsets, e.in_size, 1, 0),
                                                 R, "listed twice", CPU_ONLY),
        # backward_weight
        "bwd_weight grad_out shape": (lambda: e.bwd_w(e.grad_out[:, :, 1:], e.x, e.order, e.offsets, e.w_size, 1, 0), R,
                                      "grad_out has shape", BOTH),
        "bwd_weight wrong Cin": (lambda: e.bwd_w(e.grad_out, e.x, e.order, e.offsets, [G, COUT, 2, K, K], 1, 0), R,
                                 "input channels", BOTH),
        "bwd_weight weight_size rank": (lambda: e.bwd_w(e.grad_out, e.x, e.order, e.offsets, [G, COUT, CIN, K], 1, 0), R,
                                        "weight must be 5-D", BOTH),
        "bwd_weight no groups": (lambda: e.bwd_w(e.grad_out, e.x, e.order, e.offsets, [0, COUT, CIN, K, K], 1, 0), R,
                                 "at least one group", BOTH),
        "bwd_weight x dtype": (lambda: e.bwd_w(e.grad_out, e.x.double(), e.order, e.offsets, e.w_size, 1, 0), R, "has dtype", BOTH),
        "bwd_weight x on other device": (lambda: e.bwd_w(e.grad_out, e.x.to("meta"), e.order, e.offsets, e.w_size, 1, 0), R,
                                         "is on", BOTH),
        "bwd_weight stride 0": (lambda: e.bwd_w(e.grad_out, e.x, e.order, e.offsets, e.w_size, 0, 0), R, "stride must be >= 1", BOTH),
        "bwd_weight short order": (lambda: e.bwd_w(e.grad_out, e.x, e.order[:-1], e.offsets, e.w_size, 1, 0), R,
                                   "order must be int64", BOTH),
        "bwd_weight decreasing offsets": (lambda: e.bwd_w(e.grad_out, e.x, e.order, e.decreasing, e.w_size, 1, 0), R,
                                          "must not decrease", CPU_ONLY),
        "bwd_weight order out of range": (lambda: e.bwd_w(e.grad_out, e.x, e.oob_order, e.offsets, e.w_size, 1, 0), R,
                                          "out of range", CPU_ONLY),
        # the Python layer: a hand-made plan is validated once, on every device
        "python shifted offsets": (lambda: e.grouped_conv2d(e.x, e.weight, e.bias, None, plan=e.GroupPlan(e.group, e.order, e.offsets + 1)),
                                   "ValueError", "offsets must run from 0", BOTH),
        "python decreasing offsets": (lambda: e.grouped_conv2d(e.x, e.weight, e.bias, None, plan=e.GroupPlan(e.group, e.order, e.decreasing)),
                                      "ValueError", "must not decrease", BOTH),
        "python order lists a sample twice": (
            lambda: e.grouped_conv2d(e.x, e.weight, e.bias, None, plan=e.GroupPlan(e.group, e.dup_order, e.offsets)),
            "ValueError", "listed twice", BOTH),
        "python order out of range": (
            lambda: e.grouped_conv2d(e.x, e.weight, e.bias, None, plan=e.GroupPlan(e.group, e.oob_order, e.offsets)),
            "ValueError", "out of range", BOTH),
        "python group does not match the plan": (
            lambda: e.grouped_conv2d(e.x, e.weight, e.bias, None, plan=e.GroupPlan((e.group + 1) % G, e.order, e.offsets)),
            "ValueError", "does not match", BOTH),
        "python stride 1.5": (lambda: e.grouped_conv2d(e.x, e.weight, e.bias, e.group, 1.5), "TypeError", "must be an integer", BOTH),
        "python padding 2**62": (lambda: e.grouped_conv2d(e.x, e.weight, e.bias, e.group, 1, 2**62), "ValueError", "too large", BOTH),
        "python weight on meta": (lambda: e.grouped_conv2d(e.x, e.weight.to("meta"), e.bias, e.group), "ValueError", "is on", BOTH),
    }


def child(device):
    """Run every check of ``device``, printing a JSON line before ("start") and after ("done") each."""
    import warnings

    warnings.simplefilter("ignore")
    for name, (call, _, _, devices) in cases(environment(device)).items():
        if device not in devices:
            continue
        print(json.dumps({"start": name}), flush=True)
        try:
            call()
            result = {"done": name, "error": None, "message": "returned without an error"}
        except Exception as exc:  # the point: every failure must arrive here as an exception
            result = {"done": name, "error": type(exc).__name__, "message": str(exc).splitlines()[0] if str(exc) else ""}
        print(json.dumps(result), flush=True)


@pytest.fixture(scope="module")
def child_results():
    """device -> (results by check name, name of the check the child died in or None, child's exit description)."""
    cache = {}

    def run(device):
        if device not in cache:
            code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_op_errors as t; t.child({device!r})"
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            results, running = {}, None
            for line in proc.stdout.splitlines():
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                if "start" in record:
                    running = record["start"]
                else:
                    results[record["done"]] = record
                    running = None
            if proc.returncode < 0:
                how = f"killed by {signal.Signals(-proc.returncode).name}"
            else:
                how = f"exit status {proc.returncode}"
            cache[device] = (results, running, how, proc.stderr[-2000:])
        return cache[device]

    return run


_CASES = {name: case[1:] for name, case in cases(None).items()}  # name -> (error, pattern, devices)


def _case_params():
    params = []
    for name, (_, _, devices) in _CASES.items():
        params.append(pytest.param("cpu", name, id=f"cpu-{name}"))
        if "cuda" in devices:
            params.append(pytest.param("cuda", name, id=f"cuda-{name}", marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and hamfast built with its CUDA kernels"),
            ]))
    return params


@pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")
@pytest.mark.parametrize("device, name", _case_params())
def test_bad_argument_raises_in_a_child_process(child_results, device, name):
    results, crashed_in, how, stderr = child_results(device)
    error, pattern, _ = _CASES[name]
    if name not in results:
        where = "in this check" if crashed_in == name else f"earlier, in check {crashed_in!r}, so this one never ran"
        pytest.fail(
            f"the child process died ({how}) {where}: an error crossing from the C++ op into torch took the process "
            f"down instead of raising (tests/test_build.py checks the build for the usual cause).\n{stderr}"
        )
    got = results[name]
    assert got["error"] == error, f"{name}: expected {error}, got {got['error']}: {got['message']}"
    assert re.search(pattern, got["message"]), f"{name}: message {got['message']!r} does not match {pattern!r}"
    assert "\n" not in got["message"]
