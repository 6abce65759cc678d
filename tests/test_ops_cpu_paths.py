"""The CPU op's paths (loop, loop_parallel, fold), its dtypes, autocast and `explain`.

Every path is forced in turn with HAMFAST_CPU_PATH and compared with the pure-PyTorch reference
computed in float64 (all passes, all dtypes); `explain` is checked against the profiler labels the
kernels record (``hamfast::cpu_<pass>_<path>``), so it must name the path that really ran.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hamfast import _extension, ops
from hamfast.ops import explain, grouped_conv2d, grouped_conv2d_reference, make_group_plan

pytestmark = pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")

PATHS = ("loop", "loop_parallel", "fold")
PASSES = ("forward", "grad-input", "grad-weight")
# (B, G, Cin, Cout, H, W, k, stride, padding, groups of the samples)
CASES = {
    "mixed": (6, 4, 3, 5, 11, 10, 3, 1, 0, [2, 0, 2, 1, 0, 3]),
    "stride2_pad1_empty_groups": (5, 6, 2, 4, 9, 9, 3, 2, 1, [4, 1, 4, 4, 0]),
    "one_group": (4, 1, 3, 4, 8, 8, 5, 1, 2, [0, 0, 0, 0]),
    "single_sample": (1, 3, 4, 3, 7, 7, 3, 1, 0, [2]),
}
TOLERANCE = {  # against a float64 reference
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
    torch.float16: dict(rtol=3e-2, atol=3e-2),  # ATen's CPU float16 grad-weight rounds partial sums
}


def make_case(name, dtype, seed=0):
    batch, groups, cin, cout, h, w, k, stride, padding, group = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, h, w, generator=gen)
    weight = torch.randn(groups, cout, cin, k, k, generator=gen) * (cin * k * k) ** -0.5
    bias = torch.randn(groups, cout, generator=gen)
    return x.to(dtype), weight.to(dtype), bias.to(dtype), torch.tensor(group), stride, padding


def forward_and_grads(fn, x, weight, bias, group, stride, padding, grad_out=None):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = fn(*leaves, group, stride, padding)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    return (out,) + torch.autograd.grad(out, leaves, grad_out), grad_out


@pytest.fixture
def cpu_path(monkeypatch):
    def force(path):
        monkeypatch.setenv("HAMFAST_CPU_PATH", path)

    return force


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_path_matches_the_reference(cpu_path, name, path, dtype):
    x, weight, bias, group, stride, padding = make_case(name, dtype)
    cpu_path(path)
    got, grad_out = forward_and_grads(grouped_conv2d, x, weight, bias, group, stride, padding)
    want, _ = forward_and_grads(
        grouped_conv2d_reference, x.double(), weight.double(), bias.double(), group, stride, padding, grad_out.double()
    )
    for name_, g, w in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, want):
        assert g.dtype == dtype, name_
        tolerance = dict(TOLERANCE[dtype])
        if name_ == "grad_weight" and dtype in (torch.bfloat16, torch.float16):
            # grad_weight sums over every output position; in 16-bit the rounding of the partial
            # sums (ATen's CPU kernels, which depend on the CPU's ISA) grows with the gradient's scale.
            # 4e-3 of the largest entry: about four times the worst error seen (0.048 at 45).
            tolerance["atol"] = max(tolerance["atol"], 4e-3 * float(w.abs().max()))
        torch.testing.assert_close(g.double(), w, **tolerance, msg=lambda m: f"{name_}: {m}")
    unused = sorted(set(range(weight.shape[0])) - set(group.tolist()))
    assert torch.all(got[2][unused] == 0) and torch.all(got[3][unused] == 0)


@pytest.mark.parametrize("path", PATHS)
def test_paths_agree_bitwise_on_float64_integers(cpu_path, path):
    """Small integers make every sum exact: each path must give exactly the per-sample conv."""
    x, weight, bias, group, stride, padding = make_case("mixed", torch.float64)
    x, weight, bias = x.mul(2).round(), weight.mul(4).round(), bias.mul(2).round()
    cpu_path(path)
    out = grouped_conv2d(x, weight, bias, group, stride, padding)
    expected = torch.cat([F.conv2d(x[b : b + 1], weight[g], bias[g], stride, padding) for b, g in enumerate(group.tolist())])
    assert torch.equal(out, expected)


def _profiled_labels(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith("hamfast::cpu_")}


def _explained_labels(text: str) -> set[str]:
    labels = set()
    for line in text.splitlines():
        pass_, sep, rest = line.partition(": ")
        if sep and pass_ in PASSES:
            labels.add(f"hamfast::cpu_{pass_.replace('-', '_')}_{rest.split()[0]}")
    return labels


@pytest.mark.parametrize("path", ("auto",) + PATHS)
@pytest.mark.parametrize("name", ["mixed", "one_group"])
def test_explain_names_the_path_that_runs(cpu_path, name, path):
    x, weight, bias, group, stride, padding = make_case(name, torch.float32)
    cpu_path(path)

    def run():
        forward_and_grads(grouped_conv2d, x, weight, bias, group, stride, padding)

    run()  # with autotune on, "auto" measures here and keeps its choice (tests/test_autotune.py)
    text = explain(x, weight, group, stride, padding)
    assert text.startswith("hamfast.grouped_conv2d on cpu, float32: B=")
    explained = _explained_labels(text)
    assert len(explained) == 3, text
    if path != "auto":
        assert all(label.endswith("_" + path) for label in explained), text
        assert "forced by HAMFAST_CPU_PATH" in text
    assert _profiled_labels(run) == explained


def test_explain_takes_a_plan_and_the_autocast_dtype():
    x, weight, bias, group, stride, padding = make_case("mixed", torch.float32)
    plan = make_group_plan(group, weight.shape[0])
    assert explain(x, weight, None, stride, padding, plan=plan) == explain(x, weight, group, stride, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "on cpu, bfloat16:" in explain(x, weight, group, stride, padding)
    with pytest.raises(ValueError, match="weight expects Cin"):
        explain(x[:, :1], weight, group)


def test_explain_without_the_extension_says_the_reference_runs():
    code = (
        "import torch; from hamfast.ops import explain; "
        "print(explain(torch.randn(3, 2, 8, 8), torch.randn(2, 4, 2, 3, 3), torch.tensor([1, 0, 1])))"
    )
    env = dict(os.environ, HAMFAST_NO_EXTENSION="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "the pure-PyTorch reference runs (disabled by HAMFAST_NO_EXTENSION)" in out
    assert "grad-weight: reference" in out


def test_a_bad_forced_path_is_a_clear_error(cpu_path):
    x, weight, bias, group, stride, padding = make_case("mixed", torch.float32)
    cpu_path("fastest")
    with pytest.raises(RuntimeError, match="HAMFAST_CPU_PATH must be auto, loop, loop_parallel or fold"):
        grouped_conv2d(x, weight, bias, group, stride, padding)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64])
def test_unsupported_dtypes_are_refused(dtype):
    x = torch.zeros(2, 3, 6, 6, dtype=dtype)
    weight = torch.zeros(2, 4, 3, 3, 3, dtype=dtype)
    with pytest.raises(TypeError, match="x must be floating point, one of torch.float32, torch.float64, torch.bfloat16, torch.float16"):
        grouped_conv2d(x, weight, None, torch.tensor([0, 1]))


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_the_autocast_dtype_like_conv2d(autocast_dtype):
    x, weight, bias, group, stride, padding = make_case("mixed", torch.float32)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    with torch.autocast("cpu", dtype=autocast_dtype):
        out = grouped_conv2d(*leaves, group, stride, padding)
        per_sample = F.conv2d(x[:1], weight[group[0]], bias[group[0]], stride, padding)
    assert out.dtype == per_sample.dtype == autocast_dtype
    grads = torch.autograd.grad(out.float().square().sum(), leaves)
    assert [g.dtype for g in grads] == [torch.float32] * 3  # the leaves' dtypes
    cast = [t.to(autocast_dtype) for t in (x, weight, bias)]
    torch.testing.assert_close(out, grouped_conv2d_reference(*cast, group, stride, padding), **TOLERANCE[autocast_dtype])


def test_autocast_leaves_float64_alone_and_the_raw_op_is_cast_too():
    x, weight, bias, group, stride, padding = make_case("mixed", torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert grouped_conv2d(x, weight, bias, group, stride, padding).dtype == torch.float64
        plan = make_group_plan(group, weight.shape[0])
        raw = torch.ops.hamfast.grouped_conv2d(x.float(), weight.float(), None, plan.order, plan.offsets, stride, padding)
    assert raw.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_opcheck_reduced_precision(dtype):
    x, weight, bias, group, stride, padding = make_case("stride2_pad1_empty_groups", dtype)
    plan = make_group_plan(group, weight.shape[0])
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), plan.order, plan.offsets, stride, padding)
    torch.library.opcheck(torch.ops.hamfast.grouped_conv2d.default, args)


def test_torch_compile_fullgraph_under_autocast():
    x, weight, bias, group, stride, padding = make_case("mixed", torch.float32)
    plan = make_group_plan(group, weight.shape[0])

    def layer(inp, w, b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.relu(ops.grouped_conv2d(inp, w, b, None, stride, padding, plan=plan))

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    w_eager, w_compiled = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    eager, traced = layer(x, w_eager, bias), compiled(x, w_compiled, bias)
    assert traced.dtype == torch.bfloat16
    torch.testing.assert_close(traced, eager)
    eager.float().sum().backward()
    traced.float().sum().backward()
    torch.testing.assert_close(w_compiled.grad, w_eager.grad)
