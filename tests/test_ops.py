"""hamfast.ops.grouped_conv2d against its pure-PyTorch reference, on CPU and (where present) CUDA."""
import os
import subprocess
import sys

import pytest
import torch

from hamfast import _extension
from hamfast.ops import grouped_conv2d, grouped_conv2d_reference, make_group_plan

requires_extension = pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")
requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and _extension.has_cuda_kernels()),
    reason="needs an NVIDIA GPU and hamfast built with its CUDA kernels",
)
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=[requires_cuda, pytest.mark.cuda])]

# (B, G, Cin, Cout, H, W, k, stride, padding, group pattern)
CASES = {
    "cbrtiny_layer1": (6, 4, 4, 64, 20, 20, 5, 1, 0, "mixed"),
    "cbrtiny_layer2": (6, 4, 64, 128, 12, 12, 5, 1, 0, "mixed"),
    "cbrtiny_layer3": (5, 3, 128, 256, 9, 9, 5, 1, 0, "mixed"),
    "cbrtiny_layer4": (4, 3, 256, 512, 7, 7, 5, 1, 0, "mixed"),
    "stride2_pad1": (7, 3, 3, 8, 13, 11, 3, 2, 1, "mixed"),
    "stride2_pad2_k5": (5, 2, 4, 6, 16, 16, 5, 2, 2, "mixed"),
    "k1": (6, 3, 5, 7, 9, 9, 1, 1, 0, "mixed"),
    "k3_pad1": (6, 3, 5, 7, 9, 9, 3, 1, 1, "mixed"),
    "one_group": (5, 1, 4, 8, 12, 12, 5, 1, 0, "mixed"),
    "fifteen_groups_some_empty": (12, 15, 4, 8, 12, 12, 5, 1, 0, "sparse"),
    "unsorted_repeated": (9, 4, 4, 8, 10, 10, 3, 1, 0, "unsorted"),
    "single_sample": (1, 3, 4, 8, 10, 10, 3, 1, 0, "mixed"),
}


def make_case(name, device, dtype=torch.float32, seed=0):
    batch, groups, cin, cout, h, w, k, stride, padding, pattern = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, h, w, generator=gen, dtype=dtype)
    scale = (cin * k * k) ** -0.5
    weight = torch.randn(groups, cout, cin, k, k, generator=gen, dtype=dtype) * scale
    bias = torch.randn(groups, cout, generator=gen, dtype=dtype)
    if pattern == "sparse":  # only groups 1, 4, 9, 14 used
        group = torch.tensor([1, 4, 9, 14])[torch.randint(0, 4, (batch,), generator=gen)]
    elif pattern == "unsorted":
        group = torch.tensor([3, 0, 3, 2, 0, 3, 1, 3, 0])[:batch]
    else:
        group = torch.randint(0, groups, (batch,), generator=gen)
    to = dict(device=device)
    return x.to(**to), weight.to(**to), bias.to(**to), group.to(**to), stride, padding


def tolerance(dtype, device):
    if dtype == torch.float64:
        return dict(rtol=1e-9, atol=1e-9)
    # TF32 stays off in these tests (torch's default for conv is on: disable it for the reference too).
    return dict(rtol=1e-4, atol=1e-4) if device == "cpu" else dict(rtol=1e-3, atol=1e-3)


@pytest.fixture(autouse=True)
def exact_cuda_reference():
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_gradients_match_reference(name, device, with_bias):
    x, weight, bias, group, stride, padding = make_case(name, device)
    bias = bias if with_bias else None
    leaves = [t.clone().requires_grad_() for t in (x, weight) + ((bias,) if with_bias else ())]
    ref_leaves = [t.clone().requires_grad_() for t in leaves]

    out = grouped_conv2d(leaves[0], leaves[1], leaves[2] if with_bias else None, group, stride, padding)
    ref = grouped_conv2d_reference(
        ref_leaves[0], ref_leaves[1], ref_leaves[2] if with_bias else None, group, stride, padding
    )
    tol = tolerance(x.dtype, device)
    torch.testing.assert_close(out, ref, **tol)

    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, grad_out)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **tol)

    unused = sorted(set(range(weight.shape[0])) - set(group.tolist()))
    if unused:
        assert torch.all(grads[1][unused] == 0)
        if with_bias:
            assert torch.all(grads[2][unused] == 0)


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_each_sample_uses_its_own_groups_weights(device):
    """Per-sample definition, independent of the reference's group loop."""
    x, weight, bias, group, stride, padding = make_case("unsorted_repeated", device)
    out = grouped_conv2d(x, weight, bias, group, stride, padding)
    for b in range(x.shape[0]):
        g = int(group[b])
        expected = torch.nn.functional.conv2d(x[b : b + 1], weight[g], bias[g], stride, padding)[0]
        torch.testing.assert_close(out[b], expected, **tolerance(x.dtype, device))


@requires_extension
def test_gradcheck_float64_cpu():
    x, weight, bias, group, stride, padding = make_case("stride2_pad1", "cpu", dtype=torch.float64)
    x, weight, bias = x[:3, :, :5, :5], weight[:, :2], bias[:, :2]
    inputs = tuple(t.clone().requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(
        lambda a, w, b: grouped_conv2d(a, w, b, group[:3], stride, padding), inputs, eps=1e-6, atol=1e-6
    )


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_float64_matches_reference_exactly(device):
    x, weight, bias, group, stride, padding = make_case("k3_pad1", device, dtype=torch.float64)
    torch.testing.assert_close(
        grouped_conv2d(x, weight, bias, group, stride, padding),
        grouped_conv2d_reference(x, weight, bias, group, stride, padding),
        **tolerance(torch.float64, device),
    )


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, weight, bias, group, stride, padding = make_case("stride2_pad1", device)
    plan = make_group_plan(group, weight.shape[0])
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), plan.order, plan.offsets, stride, padding)
    torch.library.opcheck(torch.ops.hamfast.grouped_conv2d.default, args)
    torch.library.opcheck(torch.ops.hamfast.grouped_conv2d.default, (x, weight, None) + args[3:])


@requires_extension
def test_torch_compile_traces_the_op_in_one_graph():
    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cpu")
    plan = make_group_plan(group, weight.shape[0])

    def two_layers(inp, w, b):
        hidden = torch.relu(grouped_conv2d(inp, w, b, None, stride, padding, plan=plan))
        return grouped_conv2d(hidden[:, : w.shape[2]], w, b, None, stride, padding, plan=plan)

    compiled = torch.compile(two_layers, backend="aot_eager", fullgraph=True)
    w_eager, w_compiled = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    eager = two_layers(x, w_eager, bias)
    traced = compiled(x, w_compiled, bias)
    torch.testing.assert_close(traced, eager)
    eager.sum().backward()
    traced.sum().backward()
    torch.testing.assert_close(w_compiled.grad, w_eager.grad)


@requires_extension
def test_autocast_runs_in_the_autocast_dtype():
    # Like F.conv2d: no upcast; more in tests/test_ops_cpu_paths.py.
    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = grouped_conv2d(x, weight.bfloat16(), bias.bfloat16(), group, stride, padding)
    assert out.dtype == torch.bfloat16
    expected = grouped_conv2d_reference(x.bfloat16(), weight.bfloat16(), bias.bfloat16(), group, stride, padding)
    torch.testing.assert_close(out, expected)


@requires_extension
def test_plan_is_reusable_and_equivalent_to_group():
    x, weight, bias, group, stride, padding = make_case("fifteen_groups_some_empty", "cpu")
    plan = make_group_plan(group, weight.shape[0])
    assert plan.offsets[-1] == x.shape[0]
    assert torch.equal(plan.counts(), torch.bincount(group, minlength=15))
    assert torch.equal(group[plan.order], torch.sort(group).values)
    torch.testing.assert_close(
        grouped_conv2d(x, weight, bias, None, stride, padding, plan=plan),
        grouped_conv2d(x, weight, bias, group, stride, padding),
    )


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    x, weight, bias, group, stride, padding = make_case("k3_pad1", device)
    x_nc = torch.stack([x, x], dim=-1)[..., 0]  # same values, every stride doubled
    assert not x_nc.is_contiguous()
    w_nc = weight.transpose(3, 4).contiguous().transpose(3, 4)
    b_nc = torch.stack([bias, bias], dim=2)[..., 0]
    torch.testing.assert_close(
        grouped_conv2d(x_nc, w_nc, b_nc, group, stride, padding),
        grouped_conv2d_reference(x, weight, bias, group, stride, padding),
        **tolerance(x.dtype, device),
    )


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x, weight, bias, _, stride, padding = make_case("k3_pad1", device)
    empty = x[:0].clone().requires_grad_()
    out = grouped_conv2d(empty, weight, bias, torch.zeros(0, dtype=torch.long, device=device), stride, padding)
    assert out.shape == (0, weight.shape[1], 9, 9)
    out.sum().backward()
    assert empty.grad.shape == empty.shape


def bad_input_cases():
    x, weight, bias, group, _, _ = make_case("k3_pad1", "cpu")
    return {
        "group out of range": ((x, weight, bias, group + 10), IndexError, "group ids must lie in"),
        "negative group": ((x, weight, bias, group - 5), IndexError, "group ids must lie in"),
        "float group": ((x, weight, bias, group.float()), TypeError, "integers"),
        "x rank": ((x[0], weight, bias, group), ValueError, "x must be a 4-D"),
        "weight rank": ((x, weight[0], bias, group), ValueError, "weight must be a 5-D"),
        "Cin mismatch": ((x[:, :3], weight, bias, group), ValueError, "input channels"),
        "bias G mismatch": ((x, weight, bias[:2], group), ValueError, "bias shape"),
        "dtype mismatch": ((x.double(), weight, bias, group), TypeError, "dtype"),
        "bias dtype": ((x, weight, bias.double(), group), TypeError, "bias dtype"),
        "integer x": ((x.long(), weight.long(), None, group), TypeError, "floating point"),
        "group length": ((x, weight, bias, group[:-1]), ValueError, "plan covers"),
        "kernel too large": ((x[:, :, :2, :2], weight, bias, group), ValueError, "larger than the padded input"),
        "device mismatch": ((x, weight.to("meta"), bias, group), ValueError, "is on"),
    }


@pytest.mark.parametrize("case", sorted(bad_input_cases()))
@pytest.mark.parametrize("fn", [grouped_conv2d, grouped_conv2d_reference])
def test_bad_input_raises_clear_error(case, fn):
    args, error, message = bad_input_cases()[case]
    with pytest.raises(error, match=message):
        fn(*args)


@requires_extension
def test_compiled_op_checks_its_arguments_itself():
    """Callers of torch.ops.hamfast.* directly bypass the Python checks: the C++ checks still hold."""
    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cpu")
    plan = make_group_plan(group, weight.shape[0])
    op = torch.ops.hamfast.grouped_conv2d
    with pytest.raises(RuntimeError, match="input channels"):
        op(x[:, :2], weight, bias, plan.order, plan.offsets, 1, 1)
    with pytest.raises(RuntimeError, match="offsets must run from 0"):
        op(x, weight, bias, plan.order, plan.offsets + 1, 1, 1)
    with pytest.raises(RuntimeError, match="offsets must be int64"):
        op(x, weight, bias, plan.order, plan.offsets[:-1], 1, 1)
    with pytest.raises(RuntimeError, match="does not fit"):
        op(x[:, :, :1, :1], weight, bias, plan.order, plan.offsets, 1, 0)


def test_import_without_extension_falls_back_and_warns_once():
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import hamfast\n"
        "    x = torch.randn(2, 1, 5, 5); w = torch.randn(2, 3, 1, 3, 3); g = torch.tensor([1, 0])\n"
        "    a = hamfast.grouped_conv2d(x, w, None, g); b = hamfast.grouped_conv2d(x, w, None, g)\n"
        "assert a.shape == (2, 3, 3, 3)\n"
        "print(sum('pure-PyTorch reference' in str(c.message) for c in caught))\n"
    )
    env = dict(os.environ, HAMFAST_NO_EXTENSION="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "1"
