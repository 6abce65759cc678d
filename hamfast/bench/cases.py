"""The benchmarked work: CBRTiny conv cases with their inputs per implementation, and a HAM training step."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from hamfast import ops
from hamfast.bench.config import (
    DTYPES,
    HAM_LR,
    KERNEL,
    NUM_CLASSES,
    NUM_PATTERNS,
    BenchConfig,
)
from hamfast.models import HAM
from hamfast.models.inputs import POOL_KERNEL, POOL_STRIDE
from hamfast.patterns import NUM_MODALITIES, code_to_mu

Tensor = torch.Tensor


def layer_input_sizes(input_size: int, num_layers: int = 4, kernel_size: int = KERNEL) -> list[int]:
    """Side in px of each conv layer's input in CBRTiny (conv k x k no padding, then 3x3/2 max-pool).

    ``layer_input_sizes(128) == [128, 61, 28, 11]``, ``layer_input_sizes(240) == [240, 117, 56, 25]``.
    """
    sizes = [int(input_size)]
    for _ in range(num_layers - 1):
        conv = ops.conv_output_size(sizes[-1], kernel_size, 1, 0)
        sizes.append(ops.conv_output_size(conv, POOL_KERNEL, POOL_STRIDE, 0))
    return sizes


@dataclass(frozen=True)
class ConvCase:
    """One CBRTiny conv layer as a grouped convolution.

    Attributes:
        layer: 1-based layer index.
        input: side of the network's input, px.
        size: side of this layer's input, px.
        cin, cout: input and output channels.
        batch: B.
        groups: G; the samples are spread evenly over them.
        pass_: ``"fwd"`` or ``"fwd+bwd"``.
        dtype: element type of x, weight and bias.
        kernel: conv kernel side.
    """

    layer: int
    input: int
    size: int
    cin: int
    cout: int
    batch: int
    groups: int
    pass_: str
    dtype: torch.dtype = torch.float32
    kernel: int = KERNEL

    @property
    def output_size(self) -> int:
        return ops.conv_output_size(self.size, self.kernel, 1, 0)

    def flops(self) -> int:
        """Multiply-adds x 2 of the case: forward, or forward plus grad-input and grad-weight."""
        forward = 2 * self.batch * self.cout * self.cin * self.kernel**2 * self.output_size**2
        return forward * (1 if self.pass_ == "fwd" else 3)


def conv_cases(cfg: BenchConfig, in_channels: int = NUM_MODALITIES) -> Iterator[ConvCase]:
    """The conv cases of ``cfg``, in run order (dtype, input, B, G, layer, pass); then those of
    ``cfg.extra_dtypes``: fwd+bwd (if among ``cfg.passes``) at the first of ``cfg.groups`` only."""
    channels = (in_channels,) + tuple(cfg.widths)
    main = itertools.product(cfg.dtypes, cfg.inputs, cfg.batches, cfg.groups, [cfg.passes])
    extra_passes = [p for p in cfg.passes if p == "fwd+bwd"]
    extra = itertools.product(
        [d for d in cfg.extra_dtypes if d not in cfg.dtypes], cfg.inputs, cfg.batches, cfg.groups[:1], [extra_passes]
    )
    for dtype, input_size, batch, groups, passes in itertools.chain(main, extra):
        sizes = layer_input_sizes(input_size, len(cfg.widths))
        for layer, pass_ in itertools.product(cfg.layers, passes):
            yield ConvCase(
                layer, input_size, sizes[layer - 1], channels[layer - 1], channels[layer],
                batch, groups, pass_, DTYPES[dtype],
            )


def explain_case(case: ConvCase, device: torch.device) -> str:
    """:func:`hamfast.ops.explain` for ``case`` on ``device``: which path each pass of the fused op
    takes (allocates x and weight uninitialised, reads only their shapes)."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.empty((case.batch, case.cin, case.size, case.size), device=device, dtype=case.dtype)
    weight = torch.empty((case.groups, case.cout, case.cin, case.kernel, case.kernel), device=device, dtype=case.dtype)
    return ops.explain(x, weight, spread_groups(case.batch, case.groups, generator))


def spread_groups(batch: int, num_groups: int, generator: torch.Generator) -> Tensor:
    """int64 [batch] on the generator's device: groups ``0..num_groups-1`` spread evenly (counts
    differ by at most one), in random order as in a real mixed batch."""
    order = torch.randperm(batch, generator=generator, device=generator.device)
    return (torch.arange(batch, device=generator.device) % num_groups)[order]


@dataclass
class ConvInputs:
    """One input set of a conv case.

    Attributes:
        x: [B, Cin, H, W].
        weight: [G', Cout, Cin, k, k] with G' = G (G' = 1 for ``bound``).
        bias: [G', Cout].
        group: int64 [B].
        plan: the batch sorted by group (made once per batch, as HAM does).
        grad_out: [B, Cout, Ho, Wo] for ``fwd+bwd``, None for ``fwd``.
    """

    x: Tensor
    weight: Tensor
    bias: Tensor
    group: Tensor
    plan: ops.GroupPlan
    grad_out: Optional[Tensor]

    def nbytes(self) -> int:
        tensors = (self.x, self.weight, self.bias, self.group, self.grad_out)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def make_conv_inputs(case: ConvCase, impl: str, generator: torch.Generator) -> ConvInputs:
    """A fresh random input set for ``case`` on the generator's device.

    Weights and biases are scaled by ``1/sqrt(Cin*k*k)`` (PyTorch's init scale). With ``fwd+bwd``
    x, weight and bias require grad.
    """
    device, dtype = generator.device, case.dtype
    needs_grad = case.pass_ == "fwd+bwd"
    weight_sets = 1 if impl == "bound" else case.groups
    scale = (case.cin * case.kernel**2) ** -0.5

    def draw(*shape: int, scaled: bool = False) -> Tensor:
        t = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return (t * scale if scaled else t).requires_grad_(needs_grad)

    group = spread_groups(case.batch, case.groups, generator)
    return ConvInputs(
        x=draw(case.batch, case.cin, case.size, case.size),
        weight=draw(weight_sets, case.cout, case.cin, case.kernel, case.kernel, scaled=True),
        bias=draw(weight_sets, case.cout, scaled=True),
        group=group,
        plan=ops.make_group_plan(group, case.groups),
        grad_out=(
            torch.randn((case.batch, case.cout, case.output_size, case.output_size),
                        generator=generator, device=device, dtype=dtype)
            if needs_grad else None
        ),
    )


def _fused(inp: ConvInputs) -> Tensor:
    return ops.grouped_conv2d(inp.x, inp.weight, inp.bias, inp.group, plan=inp.plan)


def _reference(inp: ConvInputs) -> Tensor:
    return ops.grouped_conv2d_reference(inp.x, inp.weight, inp.bias, inp.group, plan=inp.plan)


def _per_sample(inp: ConvInputs) -> Tensor:
    batch, cin, height, width = inp.x.shape
    weight = inp.weight[inp.group].flatten(0, 1)  # [B*Cout, Cin, k, k]
    bias = inp.bias[inp.group].flatten()  # [B*Cout]
    out = F.conv2d(inp.x.reshape(1, batch * cin, height, width), weight, bias, groups=batch)
    return out.reshape(batch, -1, out.shape[2], out.shape[3])


def _bound(inp: ConvInputs) -> Tensor:
    return F.conv2d(inp.x, inp.weight[0], inp.bias[0])


CONV_IMPLS: dict[str, Callable[[ConvInputs], Tensor]] = {
    "fused": _fused,
    "reference": _reference,
    "per_sample": _per_sample,
    "bound": _bound,
}


def conv_step(impl: str, pass_: str) -> Callable[[ConvInputs], object]:
    """The timed step of a conv case: the forward (its inputs do not require grad, so no graph is
    recorded), or forward plus the gradients of x, weight and bias (``torch.autograd.grad``, so
    nothing accumulates between steps)."""
    conv = CONV_IMPLS[impl]
    if pass_ == "fwd":
        return conv

    def forward_backward(inp: ConvInputs) -> None:
        torch.autograd.grad(conv(inp), (inp.x, inp.weight, inp.bias), inp.grad_out)

    return forward_backward


# ---- HAM training step ------------------------------------------------------------------------


def mixed_batch(batch: int, input_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A random batch on the generator's device whose samples are spread evenly over the 15
    non-empty modality patterns.

    Returns:
        x float32 [B, 4, S, S], available bool [B, 4], labels int64 [B] in ``[0, NUM_CLASSES)``.
    """
    device = generator.device
    codes = 1 + spread_groups(batch, NUM_PATTERNS, generator)
    x = torch.randn((batch, NUM_MODALITIES, input_size, input_size), generator=generator, device=device)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=generator, device=device)
    return x, code_to_mu(codes, NUM_MODALITIES), labels


def ham_train_step(model: HAM) -> Callable[[tuple[Tensor, Tensor, Tensor]], None]:
    """One optimiser step of ``model`` (RMSprop, lr 1e-4, as HAM trains) on a batch from
    :func:`mixed_batch`, with cross-entropy loss."""
    optimizer = torch.optim.RMSprop(model.parameters(), lr=HAM_LR)

    def step(batch: tuple[Tensor, Tensor, Tensor]) -> None:
        x, available, labels = batch
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, available), labels).backward()
        optimizer.step()

    return step


