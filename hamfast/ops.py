"""The grouped 2-D convolution: every sample is convolved with the weights of its own group.

``out[b] = conv2d(x[b], weight[group[b]], bias[group[b]], stride, padding)``

HAM generates one set of conv weights per modality pattern; in a mixed batch every sample carries
its own pattern, so every sample needs its own group's weights. :func:`grouped_conv2d` does that
for the whole batch in one call of the compiled op (``torch.ops.hamfast.grouped_conv2d``), and
gradients flow into ``x``, ``weight`` and ``bias``. :func:`grouped_conv2d_reference` is the same
function in plain PyTorch (a loop over the groups present); it is what the fused op is tested and
benchmarked against, and what runs when the extension is not built.

A batch is sorted by group once (:func:`make_group_plan`); pass the plan to every layer so a deep
network does not re-sort per layer. :func:`explain` says which kernel path each pass of a call
takes on its device, and why.

Example::

    >>> x = torch.randn(5, 4, 32, 32)
    >>> weight = torch.randn(3, 8, 4, 5, 5)       # G=3 groups, Cout=8, Cin=4, 5x5
    >>> group = torch.tensor([2, 0, 2, 1, 0])
    >>> plan = make_group_plan(group, num_groups=3)
    >>> grouped_conv2d(x, weight, None, group, plan=plan).shape
    torch.Size([5, 8, 28, 28])
"""
from __future__ import annotations

import operator
import weakref
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from hamfast import _extension

Tensor = torch.Tensor

__all__ = [
    "DTYPES",
    "GroupPlan",
    "make_group_plan",
    "grouped_conv2d",
    "grouped_conv2d_reference",
    "explain",
    "autotune_report",
    "conv_output_size",
]

# The element types the op takes (CPU and CUDA): x, weight and bias share one.
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class GroupPlan(NamedTuple):
    """A batch sorted by group, computed once and reused by every layer.

    Attributes:
        group: int64 [B], the group of each sample (caller's order).
        order: int64 [B], sample indices sorted by group (stable): ``order[offsets[g]:offsets[g+1]]``
            are the samples of group g.
        offsets: int64 [G + 1], start of each group's range in ``order``; ``offsets[G] == B``.
    """

    group: Tensor
    order: Tensor
    offsets: Tensor

    @property
    def num_groups(self) -> int:
        return self.offsets.numel() - 1

    def counts(self) -> Tensor:
        """int64 [G], samples per group."""
        return self.offsets[1:] - self.offsets[:-1]


def make_group_plan(group: Tensor, num_groups: int, *, validate: bool = True) -> GroupPlan:
    """Sort a batch by group.

    Args:
        group: integer [B], values in ``[0, num_groups)``, any order, repeats and unused groups allowed.
        num_groups: G, the number of weight sets.
        validate: check the group range (one device sync on CUDA). Skipped while ``torch.compile``
            traces.

    Returns:
        A :class:`GroupPlan` on ``group``'s device.
    """
    if not isinstance(group, Tensor) or group.dim() != 1:
        raise ValueError(f"group must be a 1-D integer tensor [B], got {_describe(group)}")
    if group.dtype.is_floating_point or group.dtype.is_complex or group.dtype == torch.bool:
        raise TypeError(f"group must hold integers, got dtype {group.dtype}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    group = group.long()
    if validate and group.numel() > 0 and not torch.compiler.is_compiling():
        low, high = torch.stack([group.min(), group.max()]).tolist()  # one sync on CUDA, not two
        if low < 0 or high >= num_groups:
            raise IndexError(
                f"group ids must lie in [0, {num_groups}) (weight has G={num_groups}), got values in [{low}, {high}]"
            )
    order = torch.argsort(group, stable=True)
    counts = torch.zeros(num_groups, dtype=torch.long, device=group.device)
    counts.scatter_add_(0, group, torch.ones_like(group))
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    plan = GroupPlan(group, order, offsets)
    if not torch.compiler.is_compiling():
        _remember_valid(plan)  # valid by construction: grouped_conv2d never re-checks it
    return plan


# Plans known to be valid, keyed by their offsets tensor (a NamedTuple cannot carry a flag): those
# from make_group_plan, and hand-made ones once checked. The version counters catch in-place edits.
_VALID_PLANS = WeakIdKeyDictionary()


def _versions(plan: GroupPlan) -> tuple:
    return tuple(None if t.is_inference() else t._version for t in (plan.group, plan.order, plan.offsets))


def _remember_valid(plan: GroupPlan) -> None:
    _VALID_PLANS[plan.offsets] = (weakref.ref(plan.group), weakref.ref(plan.order), _versions(plan))


def _known_valid(plan: GroupPlan) -> bool:
    entry = _VALID_PLANS.get(plan.offsets)
    return (
        entry is not None
        and entry[0]() is plan.group
        and entry[1]() is plan.order
        and entry[2] == _versions(plan)
    )


def _check_plan_contents(plan: GroupPlan, batch: int) -> None:
    """Check a hand-made plan's values (one host sync on CUDA; a failure costs a few more to name it).

    Rules: ``offsets`` rises from 0 to B, ``order`` is a permutation of 0..B-1, and ``group[order]``
    is g on ``order[offsets[g]:offsets[g+1]]``.
    """
    order, offsets, group = plan.order, plan.offsets, plan.group
    counts = offsets[1:] - offsets[:-1]
    in_range = (order >= 0) & (order < batch)
    safe_order = order.clamp(0, max(batch - 1, 0))
    seen = torch.zeros(batch, dtype=torch.long, device=order.device).index_add_(0, safe_order, in_range.long())
    # The group of each sorted position, without a sync (searchsorted stays in bounds on any offsets).
    positions = torch.arange(batch, device=order.device)
    sorted_group = torch.searchsorted(offsets[1:].contiguous(), positions, right=True)
    structure_ok = (offsets[0] == 0) & (offsets[-1] == batch) & (counts >= 0).all() & in_range.all()
    structure_ok &= (seen == 1).all()
    group_ok = (group[safe_order] == sorted_group).all()
    structure_ok, group_ok = torch.stack([structure_ok, group_ok]).tolist()
    if structure_ok and group_ok:
        return
    if structure_ok:
        raise ValueError("plan.group does not match plan.order and plan.offsets: group[order[offsets[g]:offsets[g+1]]] must be g")
    if int(offsets[0]) != 0 or int(offsets[-1]) != batch:
        raise ValueError(f"plan.offsets must run from 0 to B={batch}, got {int(offsets[0])} .. {int(offsets[-1])}")
    if not bool((counts >= 0).all()):
        g = int(torch.nonzero(counts < 0)[0])
        raise ValueError(f"plan.offsets must not decrease (group {g}: {int(offsets[g])} > {int(offsets[g + 1])})")
    if not bool(in_range.all()):
        i = int(torch.nonzero(~in_range)[0])
        raise ValueError(f"plan.order must be a permutation of 0..B-1 (B={batch}), order[{i}]={int(order[i])} is out of range")
    twice = int(torch.nonzero(seen > 1)[0])
    raise ValueError(f"plan.order must be a permutation of 0..B-1, sample {twice} is listed twice")


# group tensors known to equal a plan's group, keyed by the group tensor: (plan.group, version).
_AGREEING_GROUPS = WeakIdKeyDictionary()


def _check_group_agrees(group, plan: GroupPlan, x: Tensor) -> None:
    """``group`` passed together with ``plan`` must be the batch the plan was made for.

    Sizes and device are compared for free; the values once per (group tensor, plan) pair (one host
    sync on CUDA), then remembered until either tensor is edited in place. Passing ``plan.group``
    itself, or ``group=None``, costs nothing.
    """
    if not isinstance(group, Tensor) or group.dim() != 1:
        raise ValueError(f"group must be a 1-D integer tensor [B], got {_describe(group)}")
    if group.numel() != plan.group.numel():
        raise ValueError(
            f"group has B={group.numel()} samples but the plan was made for B={plan.group.numel()}: "
            "pass the plan of this batch (or group=None)"
        )
    if group.device != plan.group.device:
        raise ValueError(f"group is on {group.device} but the plan is on {plan.group.device}")
    if x.device.type == "meta" or torch.compiler.is_compiling():
        return
    entry = _AGREEING_GROUPS.get(group)
    version = None if group.is_inference() else group._version
    if entry is not None and entry[0]() is plan.group and entry[1] == (version, _versions(plan)):
        return
    if not torch.equal(group.long(), plan.group):
        raise ValueError("group differs from plan.group: the plan was made for another batch (pass this batch's plan, or group=None)")
    _AGREEING_GROUPS[group] = (weakref.ref(plan.group), (version, _versions(plan)))


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis (no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


def _describe(t) -> str:
    if isinstance(t, Tensor):
        return f"tensor of shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"
    return type(t).__name__


_INT64_MAX = 2**63 - 1


def _check_int(name: str, value, minimum: int) -> int:
    """``value`` as a Python int: integers only (1.5 or True is an error, not 1), in [minimum, 2**63)."""
    if isinstance(value, bool) or isinstance(value, Tensor) and value.dim() != 0:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer (the same along both axes), got {value!r}") from None
    if not minimum <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be >= {minimum}, got {value}" if value < minimum else f"{name}={value} is too large")
    return value


def _check_args(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, padding: int) -> None:
    """Raise a clear error for arguments the op cannot take (checked before any kernel runs)."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, Cin, H, W], got {_describe(x)}")
    if not isinstance(weight, Tensor) or weight.dim() != 5:
        raise ValueError(f"weight must be a 5-D tensor [G, Cout, Cin, kh, kw], got {_describe(weight)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x must be floating point, one of {', '.join(map(str, DTYPES))}; got {x.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from x dtype {x.dtype}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x is on {x.device}")
    if weight.shape[2] != x.shape[1]:
        raise ValueError(f"weight expects Cin={weight.shape[2]} input channels, x has {x.shape[1]}")
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.dim() != 2:
            raise ValueError(f"bias must be None or a 2-D tensor [G, Cout], got {_describe(bias)}")
        if tuple(bias.shape) != tuple(weight.shape[:2]):
            raise ValueError(
                f"bias shape {tuple(bias.shape)} does not match weight's [G, Cout] = {tuple(weight.shape[:2])}"
            )
        if bias.dtype != x.dtype:
            raise TypeError(f"bias dtype {bias.dtype} differs from x dtype {x.dtype}")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but x is on {x.device}")
    stride = _check_int("stride", stride, 1)
    padding = _check_int("padding", padding, 0)
    kh, kw = weight.shape[3], weight.shape[4]
    h, w = x.shape[2] + 2 * padding, x.shape[3] + 2 * padding
    if kh > h or kw > w:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {h}x{w} (padding={padding})")
    out_numel = x.shape[0] * weight.shape[1] * ((h - kh) // stride + 1) * ((w - kw) // stride + 1)
    if max(h, w, out_numel) > _INT64_MAX:
        raise ValueError(f"padding={padding} is too large: the output would have {out_numel:.3g} elements (at most 2**63 - 1)")


def _resolve_plan(group: Optional[Tensor], weight: Tensor, x: Tensor, plan: Optional[GroupPlan]) -> GroupPlan:
    """The plan to use: ``plan`` (checked, its values once per plan object) or one made from ``group``."""
    num_groups = weight.shape[0]
    if plan is None:
        if group is None:
            raise ValueError("pass either group [B] or a precomputed plan")
        plan = make_group_plan(group, num_groups)
    if not isinstance(plan, GroupPlan):
        raise TypeError(f"plan must be a GroupPlan from make_group_plan, got {type(plan).__name__}")
    for name in ("group", "order", "offsets"):
        t = getattr(plan, name)
        if not isinstance(t, Tensor) or t.dim() != 1 or t.dtype != torch.long:
            raise TypeError(f"plan.{name} must be a 1-D int64 tensor, got {_describe(t)}")
    if plan.num_groups != num_groups:
        raise ValueError(f"plan was made for G={plan.num_groups} groups, weight has G={num_groups}")
    if plan.order.numel() != x.shape[0] or plan.group.numel() != x.shape[0]:
        raise ValueError(f"plan covers {plan.order.numel()} samples, x has B={x.shape[0]}")
    for name in ("group", "order", "offsets"):
        if getattr(plan, name).device != x.device:
            raise ValueError(f"plan/group is on {getattr(plan, name).device} but x is on {x.device}")
    if group is not None and group is not plan.group:
        _check_group_agrees(group, plan, x)
    if x.device.type != "meta" and not torch.compiler.is_compiling() and not _known_valid(plan):
        # A hand-made (or edited) plan: one check of its values, then remembered, so the layers of
        # a network that reuse it add no host sync.
        _check_plan_contents(plan, x.shape[0])
        _remember_valid(plan)
    return plan


def grouped_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    group: Optional[Tensor],
    stride: int = 1,
    padding: int = 0,
    *,
    plan: Optional[GroupPlan] = None,
) -> Tensor:
    """Convolve every sample with its own group's weights, in one fused call.

    ``out[b] = conv2d(x[b:b+1], weight[group[b]], bias[group[b]], stride, padding)[0]``

    Args:
        x: [B, Cin, H, W]; float32, float64, bfloat16 or float16 (CPU and CUDA).
        weight: [G, Cout, Cin, kh, kw], same dtype and device as ``x``.
        bias: [G, Cout] or None, same dtype and device as ``x``.
        group: int64 [B], values in [0, G), any order. May be None when ``plan`` is given; when
            both are given they must agree (checked once per group tensor and plan, one host sync
            on CUDA, then remembered; ``group=plan.group`` or None costs nothing).
        stride: the same along both spatial axes.
        padding: zero padding, the same on all four sides.
        plan: from :func:`make_group_plan` (reuse it across the layers of a network).

    Returns:
        [B, Cout, Ho, Wo] in ``x``'s dtype, with ``Ho = (H + 2 * padding - kh) // stride + 1``
        (likewise Wo). Differentiable in ``x``, ``weight`` and ``bias``, the gradients in their
        dtypes; unused groups get zero gradients.

    Precision: float32 on CUDA uses TF32 tensor cores when ``torch.backends.cudnn.allow_tf32`` is
    true, the same contract as cuDNN; bfloat16 and float16 accumulate in float32; on CPU every
    dtype runs ATen's convolutions (oneDNN). Under ``torch.autocast`` the op behaves like
    ``F.conv2d``: float32/bfloat16/float16 inputs are cast to the autocast dtype
    (``torch.get_autocast_dtype(device_type)``) and the result has that dtype; float64 stays float64.
    :func:`explain` says which kernel path each pass takes.
    """
    if isinstance(x, Tensor):
        x, weight, bias = _autocast_inputs(x, weight, bias)
    _check_args(x, weight, bias, stride, padding)
    plan = _resolve_plan(group, weight, x, plan)
    reason = _fallback_reason(x)
    if reason is not None:
        _extension.warn_fallback(reason)
        return _reference_with_plan(x, weight, bias, plan, stride, padding)
    if _saves_input_nhwc(x, weight, stride, padding):
        out, _ = torch.ops.hamfast.grouped_conv2d_saving_input(
            x, weight, bias, plan.order, plan.offsets, int(stride), int(padding)
        )
        return out
    return torch.ops.hamfast.grouped_conv2d(x, weight, bias, plan.order, plan.offsets, int(stride), int(padding))


def _saves_input_nhwc(x: Tensor, weight: Tensor, stride: int, padding: int) -> bool:
    """Whether the forward should hand its NHWC copy of ``x`` to autograd (the op
    ``grouped_conv2d_saving_input``), so that the backward's grad-weight does not copy ``x`` again.

    Only when the weight gradient will be computed (grad mode on, ``weight`` requiring grad), outside
    ``torch.compile`` tracing, for an ``x`` not channels_last already, and when the device's
    decisions say that forward and grad-weight both read NHWC (``cuda::saves_input_nhwc``; always
    false on the CPU).
    """
    if not (weight.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling():
        return False
    if x.device.type != "cuda" or x.is_contiguous(memory_format=torch.channels_last):
        return False
    return bool(torch.ops.hamfast.grouped_conv2d_saves_input_nhwc(x, weight, int(stride), int(padding)))


def _fallback_reason(x: Tensor) -> Optional[str]:
    """Why the pure-PyTorch reference runs instead of the compiled op for ``x``, or None."""
    if not _extension.available():
        return str(_extension._load_error)
    if x.is_cuda and not _extension.has_cuda_kernels():
        return "the extension was built without CUDA kernels"
    return None


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast gives convolutions on ``device_type``, or None when autocast is off."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta, ...)
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


def _autocast_cast(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    # What autocast does to F.conv2d's arguments: floating tensors except float64 take its dtype.
    if t is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _autocast_inputs(x: Tensor, weight, bias):
    dtype = _autocast_dtype(x.device.type)
    if dtype is None:
        return x, weight, bias
    return _autocast_cast(x, dtype), _autocast_cast(weight, dtype), _autocast_cast(bias, dtype)


def explain(
    x: Tensor,
    weight: Tensor,
    group: Optional[Tensor] = None,
    stride: int = 1,
    padding: int = 0,
    *,
    plan: Optional[GroupPlan] = None,
) -> str:
    """Which path :func:`grouped_conv2d` takes for these arguments, per pass, and why.

    Args:
        x, weight, group, stride, padding, plan: as for :func:`grouped_conv2d` (no bias: it does not
            change the path). Only shapes, dtype and device of ``x`` and ``weight`` are read; under
            ``torch.autocast`` the dtype is the one the op would run in.

    Returns:
        Multi-line text: a header with the call's sizes and device, then one line per pass
        (``forward``, ``grad-input``, ``grad-weight``): ``"<pass>: <path> (<why>)"``. On CPU the
        paths are ``loop``, ``loop_parallel`` and ``fold`` (``csrc/cpu/cpu_dispatch.h``); without
        the compiled op it says that the pure-PyTorch reference runs, and why.
    """
    x, weight, _ = _autocast_inputs(x, weight, None)
    _check_args(x, weight, None, stride, padding)
    plan = _resolve_plan(group, weight, x, plan)
    reason = _fallback_reason(x)
    if reason is not None:
        groups = int((plan.counts() > 0).sum())
        return (
            f"hamfast.grouped_conv2d on {x.device.type}, {x.dtype}: the pure-PyTorch reference runs ({reason})\n"
            + "".join(
                f"{name}: reference (one F.conv2d per non-empty group, {groups} groups)\n"
                for name in ("forward", "grad-input", "grad-weight")
            )
        )
    try:
        return torch.ops.hamfast.grouped_conv2d_explain(x, weight, plan.offsets, int(stride), int(padding))
    except NotImplementedError:  # a build whose backend for this device registers no explain
        return f"hamfast.grouped_conv2d on {x.device.type}, {x.dtype}: this build cannot explain {x.device.type} calls\n"


def autotune_report() -> dict:
    """What the run-time autotuner has measured in this process (CPU and CUDA signatures).

    Returns:
        ``{signature: {"winner": name, "median_ms": {candidate: ms or None}}}``; a signature names
        the backend, device, dtype, pass, batch bucket, G and shapes; None marks a candidate that
        could not run (e.g. out of memory). Empty without the compiled op, before the first call,
        with ``HAMFAST_AUTOTUNE=off``, or after ``torch.ops.hamfast.autotune_clear()``.
    """
    if not _extension.available():
        return {}
    import json

    return json.loads(torch.ops.hamfast.autotune_report())


def grouped_conv2d_reference(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    group: Optional[Tensor],
    stride: int = 1,
    padding: int = 0,
    *,
    plan: Optional[GroupPlan] = None,
) -> Tensor:
    """:func:`grouped_conv2d` in plain PyTorch: one ``F.conv2d`` per group present.

    Same arguments, result and gradients as :func:`grouped_conv2d`.
    """
    _check_args(x, weight, bias, stride, padding)
    plan = _resolve_plan(group, weight, x, plan)
    return _reference_with_plan(x, weight, bias, plan, stride, padding)


def _reference_with_plan(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], plan: GroupPlan, stride: int, padding: int
) -> Tensor:
    cout, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
    out_shape = (
        x.shape[0],
        cout,
        conv_output_size(x.shape[2], kh, stride, padding),
        conv_output_size(x.shape[3], kw, stride, padding),
    )
    if 0 in (x.shape[0], x.shape[1], cout):
        return _zero_extent_reference(x, weight, bias, plan, out_shape)
    offsets = plan.offsets.tolist()
    # PyTorch's weight layout, whatever the memory of `weight` (HAM generates the CUDA kernels' KRSC):
    # a channels_last-strided weight would switch ATen to another algorithm and output layout.
    weight = weight.contiguous()
    per_group = [
        F.conv2d(x[plan.order[start:end]], weight[g], None if bias is None else bias[g], stride, padding)
        for g, (start, end) in enumerate(zip(offsets[:-1], offsets[1:]))
        if end > start
    ]
    # per_group holds the samples in plan order; one gather puts them back in the caller's order.
    return torch.cat(per_group)[torch.argsort(plan.order)]


def _zero_extent_reference(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], plan: GroupPlan, out_shape: tuple
) -> Tensor:
    """The reference for a zero-sized B, Cin or Cout (``F.conv2d`` refuses Cout = 0 and returns no
    channels for Cin = 0): ``bias[group[b]]`` on every pixel when Cin = 0 (zeros without bias),
    otherwise an empty [B, Cout, Ho, Wo]. Still connected to x, weight and bias, so their gradients
    are zeros, as the compiled op gives."""
    # x.sum() and weight.sum() are 0 whenever the output has elements (then Cin = 0: both are empty).
    out = (x.sum() + weight.sum()) * 0
    if bias is not None:
        out = out + bias[plan.group].view(x.shape[0], out_shape[1], 1, 1)
    return out.expand(out_shape).contiguous()


# ---- registration of the compiled op's fake (meta) kernel and autograd formula ----------------
if _extension.available():

    def _fake_check_devices(op: str, **tensors) -> None:
        # The real kernels refuse mixed devices; the fake ones run for meta inputs, so check here too.
        (first, like), *rest = [(k, t) for k, t in tensors.items() if t is not None]
        for name, t in rest:
            if t.device != like.device:
                raise RuntimeError(f"hamfast.{op}: {name} is on {t.device} but {first} is on {like.device}")

    @torch.library.register_fake("hamfast::grouped_conv2d")
    def _grouped_conv2d_fake(x, weight, bias, order, offsets, stride, padding):
        _fake_check_devices("grouped_conv2d", x=x, weight=weight, bias=bias, order=order, offsets=offsets)
        ho = conv_output_size(x.shape[2], weight.shape[3], stride, padding)
        wo = conv_output_size(x.shape[3], weight.shape[4], stride, padding)
        return x.new_empty((x.shape[0], weight.shape[1], ho, wo))

    @torch.library.register_fake("hamfast::grouped_conv2d_backward_input")
    def _backward_input_fake(grad_out, weight, order, offsets, input_size, stride, padding):
        _fake_check_devices(
            "grouped_conv2d_backward_input", grad_out=grad_out, weight=weight, order=order, offsets=offsets
        )
        return grad_out.new_empty(input_size)

    def _grad_weight_like(x, weight_size):
        """grad_weight as the op returns it: on CUDA every path writes memory [G, Cout, kh, kw, Cin]
        (the kernels' weight layout); on the CPU, PyTorch's contiguous layout."""
        if x.device.type != "cuda":
            return x.new_empty(weight_size)
        g, cout, cin, kh, kw = weight_size
        return x.new_empty((g, cout, kh, kw, cin)).permute(0, 1, 4, 2, 3)

    @torch.library.register_fake("hamfast::grouped_conv2d_backward_weight")
    def _backward_weight_fake(grad_out, x, order, offsets, weight_size, stride, padding):
        _fake_check_devices("grouped_conv2d_backward_weight", grad_out=grad_out, x=x, order=order, offsets=offsets)
        return _grad_weight_like(x, weight_size)

    @torch.library.register_fake("hamfast::grouped_conv2d_backward_bias")
    def _backward_bias_fake(grad_out, order, offsets, groups):
        _fake_check_devices("grouped_conv2d_backward_bias", grad_out=grad_out, order=order, offsets=offsets)
        return grad_out.new_empty((groups, grad_out.shape[1]))

    @torch.library.register_fake("hamfast::grouped_conv2d_backward")
    def _backward_fake(grad_out, x, weight, order, offsets, input_size, weight_size, stride, padding, output_mask):
        _fake_check_devices(
            "grouped_conv2d_backward", grad_out=grad_out, x=x, weight=weight, order=order, offsets=offsets
        )
        return (
            grad_out.new_empty(input_size) if output_mask[0] else None,
            _grad_weight_like(x, weight_size) if output_mask[1] else None,
            grad_out.new_empty((weight_size[0], grad_out.shape[1])) if output_mask[2] else None,
        )

    @torch.library.register_fake("hamfast::grouped_conv2d_saving_input")
    def _saving_input_fake(x, weight, bias, order, offsets, stride, padding):
        out = _grouped_conv2d_fake(x, weight, bias, order, offsets, stride, padding)
        return out, torch.empty_like(x, memory_format=torch.channels_last)

    def _memory_format(t: Tensor) -> torch.memory_format:
        """channels_last for a tensor in that memory only (not also contiguous), else contiguous."""
        if t.is_contiguous() or not t.is_contiguous(memory_format=torch.channels_last):
            return torch.contiguous_format
        return torch.channels_last

    def _setup_context(ctx, inputs, output, saved_x=None):
        x, weight, bias, order, offsets, stride, padding = inputs
        x_needs, weight_needs, bias_needs = ctx.needs_input_grad[:3]
        # saved_x: the NHWC copy of x the forward made (grouped_conv2d_saving_input), read by the
        # backward's grad-weight in place of x.
        ctx.save_for_backward(
            (x if saved_x is None else saved_x) if weight_needs else None, weight if x_needs else None, order, offsets
        )
        ctx.input_size = list(x.shape)
        ctx.weight_size = list(weight.shape)
        ctx.stride, ctx.padding = stride, padding
        ctx.dy_format = _memory_format(x)

    def _setup_context_saving(ctx, inputs, output):
        out, x_nhwc = output
        ctx.mark_non_differentiable(x_nhwc)
        _setup_context(ctx, inputs, out, saved_x=x_nhwc)

    def _backward(ctx, grad_out):
        x, weight, order, offsets = ctx.saved_tensors
        # In x's memory format (the output's): a channels_last network's dy is then no copy here and
        # none in the CUDA backward (which reads NHWC), and grad_x comes back channels_last like x.
        grad_out = grad_out.contiguous(memory_format=ctx.dy_format)
        # One call for the three passes, so that CUDA converts grad_out to NHWC once for grad-input and
        # grad-weight (plan_backward_layouts) and sums the bias gradient in an own-kernel grad-weight's
        # pass over dy (else one deterministic bias kernel; either rounded once). grad_x and
        # grad_weight are bitwise the separate ops'.
        mask = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])]
        if not any(mask):
            return None, None, None, None, None, None, None
        grad_x, grad_weight, grad_bias = torch.ops.hamfast.grouped_conv2d_backward(
            grad_out, x, weight, order, offsets, ctx.input_size, ctx.weight_size, ctx.stride, ctx.padding, mask
        )
        return grad_x, grad_weight, grad_bias, None, None, None, None

    def _backward_saving(ctx, grad_out, _grad_x_nhwc):
        return _backward(ctx, grad_out)

    torch.library.register_autograd("hamfast::grouped_conv2d", _backward, setup_context=_setup_context)
    torch.library.register_autograd(
        "hamfast::grouped_conv2d_saving_input", _backward_saving, setup_context=_setup_context_saving
    )

    # Autocast: the forward runs in the autocast dtype, as F.conv2d does; inside, autocast is off, so the
    # ATen convolutions of the CPU kernels run in the dtype they are given. The backward ops get
    # their inputs in the forward's dtype from autograd and are never cast.
    def _register_autocast(op_name: str, cast: bool) -> None:
        op = getattr(torch.ops.hamfast, op_name).default
        for device_type in ("cpu", "cuda"):
            key = getattr(torch._C.DispatchKey, "Autocast" + torch._C._dispatch_key_for_device(device_type))

            def kernel(*args, _key=key, _device_type=device_type):
                if cast:
                    dtype = torch.get_autocast_dtype(_device_type)
                    args = tuple(_autocast_cast(a, dtype) if isinstance(a, Tensor) else a for a in args)
                with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_key)):
                    return op(*args)

            op.py_impl(key)(kernel)
            _autocast_lib.impl(op_name, lambda _keyset, *args, _kernel=kernel: _kernel(*args), key.name,
                               with_keyset=True)

    _autocast_lib = torch.library.Library("hamfast", "IMPL")
    _register_autocast("grouped_conv2d", cast=True)
    _register_autocast("grouped_conv2d_saving_input", cast=True)
    _register_autocast("grouped_conv2d_backward_input", cast=False)
    _register_autocast("grouped_conv2d_backward_weight", cast=False)
    _register_autocast("grouped_conv2d_backward_bias", cast=False)
    _register_autocast("grouped_conv2d_backward", cast=False)

