"""hamfast.ops.grouped_conv2d against its pure-PyTorch reference, on CPU and (where present) CUDA.

On CUDA the reference runs in float64 and the tolerance follows the precision the op computes in
(TF32 when allowed, exact float32 when not), so the tests hold on every GPU.
"""
import contextlib
import os
import subprocess
import sys

import pytest
import torch

from hamfast import _extension
from hamfast.ops import GroupPlan, autotune_report, grouped_conv2d, grouped_conv2d_reference, make_group_plan

requires_extension = pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")
requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and _extension.has_cuda_kernels()),
    reason="needs an NVIDIA GPU and hamfast built with its CUDA kernels",
)
CUDA = [requires_cuda, pytest.mark.cuda]
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=CUDA)]
# (device, allow_tf32): CUDA runs with TF32 allowed (PyTorch's default for convolutions, which the
# op's float32 path follows) and with it off (exact float32); CPU has no TF32.
DEVICE_PRECISIONS = [
    pytest.param("cpu", False, id="cpu"),
    pytest.param("cuda", False, id="cuda-fp32", marks=CUDA),
    pytest.param("cuda", True, id="cuda-tf32", marks=CUDA),
]

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


@contextlib.contextmanager
def cuda_tf32(allowed):
    """Allow or forbid TF32 for CUDA convolutions and matmuls inside the block (restored after)."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


# Relative error allowed, per precision the op computes in, against a float64 reference: as a
# fraction of max|reference| (absolute) and of each element (relative). float32: the CPU op's worst
# error over CASES is 7.8e-7 of max|reference| (2-core CPU VM), a CUDA float32 check on an H200 found
# 1.6e-6; TF32 keeps 10 mantissa bits (unit roundoff 4.9e-4), float16 too, bfloat16 7.
RELATIVE_TOLERANCE = {"float64": 1e-9, "float32": 2e-5, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 4e-2}


def precision_used(dtype, device, tf32=False):
    """The arithmetic the op runs in: float32 on CUDA with TF32 allowed means TF32 tensor cores."""
    if dtype == torch.float32 and device == "cuda" and tf32:
        return "tf32"
    return str(dtype).removeprefix("torch.")


def tolerance(dtype, device, tf32=False, reference=None):
    """assert_close tolerances for comparing the op with the reference of :func:`reference_for`.

    CPU (a same-dtype reference, as before): 1e-4 for float32, 1e-9 for float64. CUDA (a float64
    reference): from the precision used, scaled by max|reference|.
    """
    if device == "cpu":
        return dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    rel = RELATIVE_TOLERANCE[precision_used(dtype, device, tf32)]
    scale = float(reference.detach().abs().max()) if reference is not None and reference.numel() else 1.0
    return dict(rtol=rel, atol=rel * max(scale, 1.0))


def reference_for(device, x, weight, bias, group, stride, padding):
    """The reference the op is compared with: the group loop of F.conv2d in the inputs' dtype on
    CPU; in float64 on the inputs' values on CUDA (cuDNN's own float32 may run in TF32)."""
    if device == "cpu":
        return grouped_conv2d_reference(x, weight, bias, group, stride, padding)
    promote = (lambda t: None if t is None else t.double())
    return grouped_conv2d_reference(promote(x), promote(weight), promote(bias), group, stride, padding)


def assert_matches(got, want, dtype, device, tf32=False):
    """The op's result ``got`` against ``want`` from :func:`reference_for`, compared in want's dtype."""
    torch.testing.assert_close(got.to(want.dtype), want, **tolerance(dtype, device, tf32, want))


@requires_extension
@pytest.mark.parametrize("device, tf32", DEVICE_PRECISIONS)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_gradients_match_reference(name, device, tf32, with_bias):
    x, weight, bias, group, stride, padding = make_case(name, device)
    bias = bias if with_bias else None
    leaves = [t.clone().requires_grad_() for t in (x, weight) + ((bias,) if with_bias else ())]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]

    with cuda_tf32(tf32):
        out = grouped_conv2d(leaves[0], leaves[1], leaves[2] if with_bias else None, group, stride, padding)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, leaves, grad_out)
        ref = reference_for(device, ref_leaves[0], ref_leaves[1], ref_leaves[2] if with_bias else None, group,
                            stride, padding)
        ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out.to(ref.dtype))
    assert_matches(out, ref, x.dtype, device, tf32)
    for got, want in zip(grads, ref_grads):
        assert_matches(got, want, x.dtype, device, tf32)

    unused = sorted(set(range(weight.shape[0])) - set(group.tolist()))
    if unused:
        assert torch.all(grads[1][unused] == 0)
        if with_bias:
            assert torch.all(grads[2][unused] == 0)


@requires_extension
@pytest.mark.parametrize("device, tf32", DEVICE_PRECISIONS)
def test_each_sample_uses_its_own_groups_weights(device, tf32):
    """Per-sample definition, independent of the reference's group loop."""
    x, weight, bias, group, stride, padding = make_case("unsorted_repeated", device)
    with cuda_tf32(tf32):
        out = grouped_conv2d(x, weight, bias, group, stride, padding)
    exact = torch.float32 if device == "cpu" else torch.float64
    for b in range(x.shape[0]):
        g = int(group[b])
        expected = torch.nn.functional.conv2d(
            x[b : b + 1].to(exact), weight[g].to(exact), bias[g].to(exact), stride, padding
        )[0]
        assert_matches(out[b], expected, x.dtype, device, tf32)


def test_tolerance_follows_the_precision_used():
    """The CUDA tolerances: exact float32 is 250x stricter than TF32; they scale with the reference."""
    ref = torch.tensor([0.5, -20.0])
    fp32 = tolerance(torch.float32, "cuda", False, ref)
    tf32 = tolerance(torch.float32, "cuda", True, ref)
    assert fp32["atol"] == pytest.approx(20 * 2e-5) and tf32["atol"] == pytest.approx(20 * 5e-3)
    assert tolerance(torch.float64, "cuda", True, ref)["rtol"] == 1e-9  # TF32 never applies to float64
    assert tolerance(torch.bfloat16, "cuda", False, ref)["rtol"] > tf32["rtol"]
    assert tolerance(torch.float32, "cpu", True) == dict(rtol=1e-4, atol=1e-4)  # CPU: as strict as ever
    # A TF32-sized error passes only the TF32 tolerance.
    got = ref + torch.tensor([0.0, 20 * 1e-3])
    torch.testing.assert_close(got, ref, **tf32)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got, ref, **fp32)


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
    with cuda_tf32(True):  # TF32 never touches float64
        out = grouped_conv2d(x, weight, bias, group, stride, padding)
    assert_matches(out, reference_for(device, x, weight, bias, group, stride, padding), torch.float64, device, True)


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, weight, bias, group, stride, padding = make_case("stride2_pad1", device)
    plan = make_group_plan(group, weight.shape[0])
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), plan.order, plan.offsets, stride, padding)
    torch.library.opcheck(torch.ops.hamfast.grouped_conv2d.default, args)
    torch.library.opcheck(torch.ops.hamfast.grouped_conv2d.default, (x, weight, None) + args[3:])


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_bias_gradient_op_sums_each_group_exactly(device, dtype):
    """grouped_conv2d_backward_bias: grad_bias[g, c] = sum of grad_out over group g's samples and
    pixels, summed in float32 (float64) and rounded once, so integer-valued inputs give the exact sum
    in every dtype; NCHW and channels_last grad_out, odd sizes, groups without samples (zeros) and an
    empty batch; the same on a second run (no atomics)."""
    gen = torch.Generator().manual_seed(3)
    groups = 5
    group = torch.tensor([4, 0, 4, 2, 4, 0, 2])  # groups 1 and 3 empty
    dy64 = torch.randint(-4, 5, (7, 6, 5, 3), generator=gen).double()
    want = torch.zeros(groups, 6, dtype=torch.float64).index_add_(0, group, dy64.sum((2, 3)))
    plan = make_group_plan(group.to(device), groups)
    op = torch.ops.hamfast.grouped_conv2d_backward_bias
    for layout in (torch.contiguous_format, torch.channels_last):
        dy = dy64.to(device=device, dtype=dtype).contiguous(memory_format=layout)
        got = op(dy, plan.order, plan.offsets, groups)
        assert got.dtype == dtype and got.shape == (groups, 6)
        assert torch.equal(got.cpu(), want.to(dtype)), (layout, got, want)
        assert torch.equal(op(dy, plan.order, plan.offsets, groups), got)
    empty = make_group_plan(torch.zeros(0, dtype=torch.long, device=device), groups)
    got = op(torch.zeros(0, 6, 5, 3, device=device, dtype=dtype), empty.order, empty.offsets, groups)
    assert torch.equal(got.cpu(), torch.zeros(groups, 6, dtype=dtype))
    torch.library.opcheck(op.default, (dy64.to(device=device, dtype=dtype), plan.order, plan.offsets, groups))


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_one_backward_op_gives_the_separate_ops_results_bitwise(device, dtype, layout):
    """grouped_conv2d_backward (what autograd calls: one op, so CUDA converts dy to NHWC once for
    grad-input and grad-weight) returns exactly what the three separate ops return, for every
    output_mask, in their dtypes and memory formats; results not asked for are None. One exception:
    on CUDA, asked together with an own-kernel grad-weight, grad_bias comes from that pass over dy
    (summed in another fixed order than the bias kernel's), so there it matches to rounding."""
    x, weight, bias, group, stride, padding = make_case("fifteen_groups_some_empty", device, dtype=dtype)
    plan = make_group_plan(group, weight.shape[0])
    out = grouped_conv2d(x, weight, bias, None, stride, padding, plan=plan)
    gen = torch.Generator().manual_seed(5)
    dy = torch.randn(out.shape, generator=gen, dtype=dtype).to(device).contiguous(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    ops = torch.ops.hamfast
    sizes = (list(x.shape), list(weight.shape), stride, padding)
    want = (
        ops.grouped_conv2d_backward_input(dy, weight, plan.order, plan.offsets, sizes[0], stride, padding),
        ops.grouped_conv2d_backward_weight(dy, x, plan.order, plan.offsets, sizes[1], stride, padding),
        ops.grouped_conv2d_backward_bias(dy, plan.order, plan.offsets, weight.shape[0]),
    )
    for mask in ([True, True, True], [True, False, False], [False, True, True], [False, False, True]):
        got = ops.grouped_conv2d_backward(
            dy, x if mask[1] else None, weight if mask[0] else None, plan.order, plan.offsets, *sizes, mask
        )
        for asked, g, w in zip(mask, got, want):
            if not asked:
                assert g is None
                continue
            assert g.dtype == w.dtype and g.shape == w.shape and g.stride() == w.stride(), (mask, g.stride(), w.stride())
            if device == "cuda" and g is got[2] and mask[1]:
                torch.testing.assert_close(g, w, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-4)
                continue
            assert torch.equal(g, w), mask
    torch.library.opcheck(
        ops.grouped_conv2d_backward.default, (dy, x, weight, plan.order, plan.offsets, *sizes, [True, True, True])
    )


@requires_extension
def test_autograd_runs_the_one_backward_op_and_the_cpu_makes_no_nhwc_copy():
    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cpu")
    x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    before = torch.ops.hamfast.nhwc_copies()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        grouped_conv2d(x, weight, bias, group, stride, padding).square().sum().backward()
    names = {e.name for e in prof.events()}
    assert "hamfast::grouped_conv2d_backward" in names, sorted(n for n in names if "hamfast" in n)
    assert not any(n.startswith("hamfast::grouped_conv2d_backward_") for n in names)
    assert torch.ops.hamfast.nhwc_copies() == before


class _BackwardCalls(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the ops called and, for hamfast's backward op, whether grad_out and x were channels_last."""

    def __init__(self):
        super().__init__()
        self.ops, self.backward_layouts = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        if func.overloadpacket is torch.ops.hamfast.grouped_conv2d_backward:
            grad_out, x = args[0], args[1]
            cl = torch.channels_last
            self.backward_layouts.append(
                (grad_out.is_contiguous(memory_format=cl), None if x is None else x.is_contiguous(memory_format=cl))
            )
        return func(*args, **(kwargs or {}))


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_saving_forward_hands_backward_an_nhwc_x_with_the_plain_forwards_results(device, monkeypatch):
    """When the forward saves its NHWC x (grouped_conv2d_saving_input, asked for on CUDA when
    forward and grad-weight both read NHWC), autograd keeps that copy in place of x and the backward's
    grad-weight reads it: same output and gradients as the plain forward (bitwise on CUDA, where the
    kernels read NHWC either way; within float32 rounding on the CPU, where ATen may take another
    algorithm for a channels_last x). Without a weight gradient nothing is saved."""
    import hamfast.ops as ops

    if device == "cuda":
        # The fixed choice, and cuDNN (if it runs a pass) deterministic, so both runs compute alike.
        monkeypatch.setenv("HAMFAST_AUTOTUNE", "off")
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    x, weight, bias, group, stride, padding = make_case("k3_pad1", device)
    plan = make_group_plan(group, weight.shape[0])

    def run(saving, weight_grad=True):
        monkeypatch.setattr(ops, "_saves_input_nhwc", lambda *a: saving)
        xi, wi, bi = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
        wi.requires_grad_(weight_grad)
        calls = _BackwardCalls()
        with calls:
            out = grouped_conv2d(xi, wi, bi, None, stride, padding, plan=plan)
            out.square().sum().backward()
        return out.detach(), (xi.grad, wi.grad, bi.grad), calls

    out_plain, grads_plain, calls_plain = run(False)
    out_saving, grads_saving, calls_saving = run(True)
    assert "hamfast.grouped_conv2d_saving_input" in calls_saving.ops, calls_saving.ops
    assert "hamfast.grouped_conv2d_saving_input" not in calls_plain.ops
    # The backward got NCHW dy (x was NCHW) and the NHWC x; the plain forward's backward the NCHW x.
    assert calls_saving.backward_layouts == [(False, True)], calls_saving.backward_layouts
    assert calls_plain.backward_layouts == [(False, False)], calls_plain.backward_layouts
    exact = device == "cuda"
    assert torch.equal(out_saving, out_plain)
    for got, want in zip(grads_saving, grads_plain):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    *_, calls_no_weight_grad = run(True, weight_grad=False)
    assert "hamfast.grouped_conv2d_saving_input" in calls_no_weight_grad.ops  # asked for by the patch
    assert calls_no_weight_grad.backward_layouts == [(False, None)]  # but nothing saved for grad-weight


@requires_extension
def test_only_cuda_asks_the_forward_to_save_its_nhwc_x():
    """_saves_input_nhwc: never on the CPU (its kernels take x as given), nor without a weight
    gradient, nor for a channels_last x; the op the CUDA decision comes from says false on the CPU."""
    import hamfast.ops as ops

    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cpu")
    weight.requires_grad_()
    assert torch.ops.hamfast.grouped_conv2d_saves_input_nhwc(x, weight, stride, padding) is False
    assert not ops._saves_input_nhwc(x, weight, stride, padding)
    with torch.no_grad():
        assert not ops._saves_input_nhwc(x, weight, stride, padding)
    assert not ops._saves_input_nhwc(x, weight.detach(), stride, padding)


@requires_extension
def test_opcheck_saving_forward():
    x, weight, bias, group, stride, padding = make_case("stride2_pad1", "cpu")
    plan = make_group_plan(group, weight.shape[0])
    op = torch.ops.hamfast.grouped_conv2d_saving_input
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), plan.order, plan.offsets, stride, padding)
    out, x_nhwc = op(*args)
    assert torch.equal(out, torch.ops.hamfast.grouped_conv2d(*args))
    assert torch.equal(x_nhwc, x) and x_nhwc.is_contiguous(memory_format=torch.channels_last)
    assert x_nhwc.data_ptr() != x.data_ptr() and not x_nhwc.requires_grad
    torch.library.opcheck(op.default, args)


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_x_gets_channels_last_dy_and_grad_x(device, monkeypatch):
    """dy reaches the backward op in x's memory format (a channels_last network's dy is then no copy,
    and CUDA's own kernels read it in place), and grad_x is computed in it; the values are those of
    the NCHW call (float32 without TF32: the passes may run other algorithms for the two layouts)."""
    import hamfast.ops as ops

    monkeypatch.setattr(ops, "_saves_input_nhwc", lambda *a: False)  # x as given reaches the backward
    x, weight, bias, group, stride, padding = make_case("k3_pad1", device)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.detach().contiguous(memory_format=layout).requires_grad_()
        wi = weight.detach().clone().requires_grad_()
        calls = _BackwardCalls()
        with calls, cuda_tf32(False):
            grouped_conv2d(xi, wi, bias, group, stride, padding).square().sum().backward()
        cl = layout == torch.channels_last
        assert calls.backward_layouts == [(cl, cl)], (layout, calls.backward_layouts)
        results.append((xi.grad, wi.grad))
    (gx, gw), (gx_cl, gw_cl) = results
    assert torch.allclose(gx_cl, gx, rtol=1e-4, atol=1e-4) and torch.allclose(gw_cl, gw, rtol=1e-4, atol=1e-4)
    if device == "cuda":
        assert gx_cl.is_contiguous(memory_format=torch.channels_last)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("choice", ["tensor_core:64x64:1", "tensor_core:128x128:3", "simt:2"])
def test_cuda_bias_gradient_fused_into_grad_weight_is_exact_and_reproducible(dtype, choice, monkeypatch):
    """With grad-weight on the own kernels, the backward op takes grad_bias from grad-weight's pass
    over dy: integer-valued dy (every partial sum exact) gives exactly the bias kernel's result, at
    split-K 1 (written by the GEMM) and 3 (through the reduce), and the same bits on a second call."""
    if choice.startswith("simt") and dtype in (torch.bfloat16, torch.float16):
        pytest.skip("16-bit inputs have no SIMT path")
    monkeypatch.setenv("HAMFAST_DISPATCH_OVERRIDE", choice)
    x, weight, bias, group, stride, padding = make_case("fifteen_groups_some_empty", "cuda", dtype=dtype)
    plan = make_group_plan(group, weight.shape[0])
    out_shape = grouped_conv2d(x, weight, bias, None, stride, padding, plan=plan).shape
    gen = torch.Generator().manual_seed(7)
    dy = torch.randint(-3, 4, out_shape, generator=gen).to(device="cuda", dtype=dtype)
    ops = torch.ops.hamfast
    sizes = (list(x.shape), list(weight.shape), stride, padding)
    _, _, fused = ops.grouped_conv2d_backward(dy, x, weight, plan.order, plan.offsets, *sizes, [True, True, True])
    _, _, again = ops.grouped_conv2d_backward(dy, x, weight, plan.order, plan.offsets, *sizes, [False, True, True])
    separate = ops.grouped_conv2d_backward_bias(dy, plan.order, plan.offsets, weight.shape[0])
    assert torch.equal(fused, separate) and torch.equal(again, fused)


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_weights_in_the_kernels_layout_give_the_contiguous_weights_results(device):
    """A weight whose memory is [Cout, kh, kw, Cin] per group, the groups padded apart (how HAM
    generates them), gives the results of the same weight contiguous, within float32 rounding (ATen's
    CPU convolutions may pick another algorithm for a channels_last weight)."""
    x, weight, bias, group, stride, padding = make_case("k3_pad1", device)
    g, cout, cin, kh, kw = weight.shape
    rows = torch.zeros(g, cout * kh * kw * cin + 8, device=device)
    rows[:, : cout * kh * kw * cin] = weight.permute(0, 1, 3, 4, 2).flatten(1)
    placed = rows[:, : cout * kh * kw * cin].view(g, cout, kh, kw, cin).permute(0, 1, 4, 2, 3)
    assert torch.equal(placed, weight) and not placed.is_contiguous()
    results = []
    for w in (weight, placed):
        w = w.detach().clone() if w is weight else w.detach()
        xi, wi = x.detach().clone().requires_grad_(), w.requires_grad_()
        out = grouped_conv2d(xi, wi, bias, group, stride, padding)
        out.square().sum().backward()
        results.append((out.detach(), xi.grad, wi.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@requires_extension
@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("autotune", ["off", "on"])
def test_cuda_own_kernels_copy_x_and_dy_to_nhwc_once_each_per_backward(autotune, monkeypatch):
    """NCHW activations on the own kernels (fixed heuristic: SIMT or tensor cores for float32):
    forward copies x once and keeps that copy for grad-weight; backward copies dy once for
    grad-input and grad-weight together (the separate ops copied dy twice and x again): 2 copies per
    layer, not 4. Channels_last activations: none. With autotune on, the kept winners decide; a
    cuDNN winner copies nothing."""
    monkeypatch.setenv("HAMFAST_AUTOTUNE", autotune)
    torch.ops.hamfast.autotune_clear()
    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cuda")
    plan = make_group_plan(group, weight.shape[0])
    x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()

    def step(inp):
        grouped_conv2d(inp, weight, bias, None, stride, padding, plan=plan).square().sum().backward()

    step(x)  # with autotune on: the measuring call (it copies per candidate)
    before = torch.ops.hamfast.nhwc_copies()
    step(x)
    copies = torch.ops.hamfast.nhwc_copies() - before
    # The forward keeps its NHWC x for an own-kernel grad-weight (grouped_conv2d_saving_input):
    # x once in forward, dy once in backward.
    if autotune == "off":
        assert copies == 2, copies
    else:
        own = sum(not e["winner"].startswith("cudnn") for e in autotune_report().values())
        assert copies <= 2 and (own < 3 or copies == 2), (copies, autotune_report())
    if autotune == "off":
        x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        before = torch.ops.hamfast.nhwc_copies()
        grouped_conv2d(x_cl, weight, bias, None, stride, padding, plan=plan).sum().backward()
        # x is channels_last, and so is the output and, from ops.py, dy: no copy at all.
        assert torch.ops.hamfast.nhwc_copies() - before == 0
        assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("autotune", ["off", "on"])
def test_cuda_reads_hams_weights_in_place_and_returns_grad_weight_in_their_layout(autotune, monkeypatch):
    """HAM's generated conv weights (per pattern [Cout, kh, kw, Cin] memory, the patterns rows of h's
    output) reach the kernels without a copy in forward and grad-input; a contiguous
    [G, Cout, Cin, kh, kw] weight is copied once per pass that reads it on the own kernels. grad_weight
    comes back with [G, Cout, kh, kw, Cin] memory on every path, as the fake implementation says."""
    from hamfast.models import HAM

    monkeypatch.setenv("HAMFAST_AUTOTUNE", autotune)
    torch.ops.hamfast.autotune_clear()
    torch.manual_seed(0)
    ham = HAM(widths=(8, 16, 16, 32)).cuda().train()
    x = torch.rand(6, 4, 64, 64, device="cuda")
    available = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0]] * 2, dtype=torch.bool, device="cuda")
    ham(x, available).square().sum().backward()  # with autotune on: the measuring call
    before = torch.ops.hamfast.weight_copies()
    ham.zero_grad()
    ham(x, available).square().sum().backward()
    assert torch.ops.hamfast.weight_copies() == before
    assert ham.hypernet.out.weight.grad.abs().sum() > 0

    xc, weight, bias, group, stride, padding = make_case("k3_pad1", "cuda")
    plan = make_group_plan(group, weight.shape[0])
    xc.requires_grad_(), weight.requires_grad_()
    grouped_conv2d(xc, weight, bias, None, stride, padding, plan=plan).sum().backward()
    g, cout, cin, kh, kw = weight.shape
    grads = torch.ops.hamfast.grouped_conv2d_backward(
        torch.ones(xc.shape[0], cout, xc.shape[2], xc.shape[3], device="cuda"), xc.detach(), weight.detach(),
        plan.order, plan.offsets, list(xc.shape), list(weight.shape), stride, padding, [True, True, False])
    assert grads[1].permute(0, 1, 3, 4, 2).is_contiguous(), grads[1].stride()
    if autotune == "off":
        before = torch.ops.hamfast.weight_copies()
        grouped_conv2d(xc, weight, bias, None, stride, padding, plan=plan).sum().backward()
        assert torch.ops.hamfast.weight_copies() - before == 2


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
@pytest.mark.parametrize("device, tf32", DEVICE_PRECISIONS)
def test_non_contiguous_inputs(device, tf32):
    x, weight, bias, group, stride, padding = make_case("k3_pad1", device)
    x_nc = torch.stack([x, x], dim=-1)[..., 0]  # same values, every stride doubled
    assert not x_nc.is_contiguous()
    w_nc = weight.transpose(3, 4).contiguous().transpose(3, 4)
    b_nc = torch.stack([bias, bias], dim=2)[..., 0]
    with cuda_tf32(tf32):
        out = grouped_conv2d(x_nc, w_nc, b_nc, group, stride, padding)
    assert_matches(out, reference_for(device, x, weight, bias, group, stride, padding), x.dtype, device, tf32)


@requires_extension
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x, weight, bias, _, stride, padding = make_case("k3_pad1", device)
    empty = x[:0].clone().requires_grad_()
    out = grouped_conv2d(empty, weight, bias, torch.zeros(0, dtype=torch.long, device=device), stride, padding)
    assert out.shape == (0, weight.shape[1], 9, 9)
    out.sum().backward()
    assert empty.grad.shape == empty.shape


# (B, Cin, Cout): a zero-sized batch or channel dimension on every path (issue 21: Cin = 0 or
# Cout = 0 used to kill a CUDA process with SIGFPE, and F.conv2d refuses Cout = 0).
ZERO_EXTENTS = {"zero Cin": (3, 0, 5), "zero Cout": (3, 4, 0), "zero batch": (0, 4, 5), "all zero": (0, 0, 0)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [grouped_conv2d, grouped_conv2d_reference], ids=["op", "reference"])
@pytest.mark.parametrize("case", sorted(ZERO_EXTENTS))
@pytest.mark.parametrize("with_bias", [True, False])
def test_zero_sized_channels_or_batch_give_empty_results(case, fn, device, with_bias):
    batch, cin, cout = ZERO_EXTENTS[case]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, 7, 6, generator=g).to(device).requires_grad_()
    weight = torch.randn(3, cout, cin, 3, 3, generator=g).to(device).requires_grad_()
    bias = torch.randn(3, cout, generator=g).to(device).requires_grad_() if with_bias else None
    group = torch.tensor([2, 0, 2][:batch], dtype=torch.long, device=device)
    out = fn(x, weight, bias, group, 2, 1)
    assert out.shape == (batch, cout, 4, 3)
    want = torch.zeros(out.shape, device=device)
    if with_bias and batch:
        want = want + bias.detach()[group][:, :, None, None]  # Cin = 0: the empty sum plus the bias
    assert torch.equal(out.detach(), want)
    grad_out = torch.randn(out.shape, generator=g).to(device)
    out.backward(grad_out)
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    if with_bias:
        want_bias = torch.zeros_like(bias)
        for b in range(batch):
            want_bias[group[b]] += grad_out[b].sum((1, 2))
        torch.testing.assert_close(bias.grad, want_bias)


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
        "stride 1.5": ((x, weight, bias, group, 1.5), TypeError, "stride must be an integer"),
        "stride pair": ((x, weight, bias, group, (1, 1)), TypeError, "stride must be an integer"),
        "stride True": ((x, weight, bias, group, True), TypeError, "stride must be an integer"),
        "stride 0": ((x, weight, bias, group, 0), ValueError, "stride must be >= 1"),
        "padding 0.5": ((x, weight, bias, group, 1, 0.5), TypeError, "padding must be an integer"),
        "negative padding": ((x, weight, bias, group, 1, -1), ValueError, "padding must be >= 0"),
        "padding 2**62": ((x, weight, bias, group, 1, 2**62), ValueError, "padding=4611686018427387904 is too large"),
        "plan of lists": ((x, weight, bias, None, 1, 0, GroupPlan([0], [0], [0, 1])), TypeError, "plan.group must be"),
    }


@pytest.mark.parametrize("case", sorted(bad_input_cases()))
@pytest.mark.parametrize("fn", [grouped_conv2d, grouped_conv2d_reference])
def test_bad_input_raises_clear_error(case, fn):
    args, error, message = bad_input_cases()[case]
    plan = args[6] if len(args) > 6 else None
    with pytest.raises(error, match=message):
        fn(*args[:6], plan=plan)


# The compiled ops' own checks (torch.ops.hamfast.* called directly) are tested in a child process,
# where a crash cannot take pytest down: tests/test_op_errors.py.


@requires_extension
def test_hand_made_plan_is_checked_once_and_again_after_an_edit(monkeypatch):
    from hamfast import ops

    x, weight, bias, group, stride, padding = make_case("unsorted_repeated", "cpu")
    made = make_group_plan(group, weight.shape[0])
    calls = []
    real_check = ops._check_plan_contents
    monkeypatch.setattr(ops, "_check_plan_contents", lambda plan, batch: calls.append(1) or real_check(plan, batch))
    for _ in range(3):
        grouped_conv2d(x, weight, bias, None, stride, padding, plan=made)
    assert calls == []  # made by make_group_plan: valid by construction, never read again
    hand_made = GroupPlan(made.group.clone(), made.order.clone(), made.offsets.clone())
    for _ in range(3):
        out = grouped_conv2d(x, weight, bias, None, stride, padding, plan=hand_made)
    assert len(calls) == 1  # checked once, then remembered
    torch.testing.assert_close(out, grouped_conv2d(x, weight, bias, group, stride, padding))
    hand_made.order[1] = hand_made.order[0]  # an in-place edit is seen by the version counter
    with pytest.raises(ValueError, match="listed twice"):
        grouped_conv2d(x, weight, bias, None, stride, padding, plan=hand_made)
    assert len(calls) == 2


def test_group_given_with_a_plan_must_be_the_plans_batch(monkeypatch):
    """Issue 18: the op used to ignore group when a plan was given."""
    x, weight, bias, group, stride, padding = make_case("fifteen_groups_some_empty", "cpu")
    plan = make_group_plan(group, weight.shape[0])
    other_batch = make_group_plan(torch.cat([group, group[:1]]), weight.shape[0])
    with pytest.raises(ValueError, match=f"plan covers {group.numel() + 1} samples, x has B={group.numel()}"):
        grouped_conv2d(x, weight, bias, group, stride, padding, plan=other_batch)
    with pytest.raises(ValueError, match=f"group has B={group.numel() - 1} samples but the plan was made for B={group.numel()}"):
        grouped_conv2d(x, weight, bias, group[1:], stride, padding, plan=plan)
    shuffled = group.flip(0)
    assert not torch.equal(shuffled, group)
    with pytest.raises(ValueError, match="the plan was made for another batch"):
        grouped_conv2d(x, weight, bias, shuffled, stride, padding, plan=plan)
    # An equal copy is accepted and checked once; an in-place edit of it is checked again.
    compared = []
    real_equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: compared.append(1) or real_equal(a, b))
    copy = group.clone()
    want = grouped_conv2d(x, weight, bias, None, stride, padding, plan=plan)
    for _ in range(3):
        assert real_equal(grouped_conv2d(x, weight, bias, copy, stride, padding, plan=plan), want)
    assert len(compared) == 1
    copy[0] = (copy[0] + 1) % weight.shape[0]
    with pytest.raises(ValueError, match="another batch"):
        grouped_conv2d(x, weight, bias, copy, stride, padding, plan=plan)
    grouped_conv2d(x, weight, bias, plan.group, stride, padding, plan=plan)  # the plan's own group: no compare
    assert len(compared) == 2


@requires_extension
@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("autotune", ["off", "on"])
def test_layers_reusing_a_plan_do_not_sync_the_device(autotune, monkeypatch):
    """The fixed heuristic never syncs. With autotune on, the first call per signature measures
    (CUDA events: syncs), so one warm-up step runs first; the kept choices are then sync-free
    unless one is the per-group cuDNN loop, which reads the offsets on the host by design."""
    monkeypatch.setenv("HAMFAST_AUTOTUNE", autotune)
    torch.ops.hamfast.autotune_clear()
    x, weight, bias, group, stride, padding = make_case("k3_pad1", "cuda")
    plan = make_group_plan(group, weight.shape[0])  # the one sync: the group-range check
    hand_made = GroupPlan(plan.group.clone(), plan.order.clone(), plan.offsets.clone())
    grouped_conv2d(x, weight, bias, None, stride, padding, plan=hand_made)  # checked here, once
    x.requires_grad_()
    if autotune == "on":
        hidden = grouped_conv2d(x, weight, bias, None, stride, padding, plan=plan)
        grouped_conv2d(hidden[:, : weight.shape[2]], weight, bias, None, stride, padding, plan=plan).sum().backward()
        winners = {entry["winner"] for entry in autotune_report().values()}
        assert winners, "the warm-up step measured nothing"
        if "cudnn_per_group" in winners:
            pytest.skip(f"the autotuner kept the per-group cuDNN loop (one sync per call by design): {winners}")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for p in (plan, hand_made):
            hidden = grouped_conv2d(x, weight, bias, None, stride, padding, plan=p)
            out = grouped_conv2d(hidden[:, : weight.shape[2]], weight, bias, None, stride, padding, plan=p)
            out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


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
