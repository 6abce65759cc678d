"""HAM, the Hypernetwork for Absent Modalities (Fürböck et al.).

A hypernetwork h maps the binary modality pattern mu (t1, t1ce, t2, flair) to the parameters
``theta_mu = h(mu)`` of a CBRTiny, and ``f_{theta_mu}`` classifies a slice whose absent modalities
are zero. The loss gradient flows through ``theta_mu`` into h, so one h serves all 15 patterns.

A batch may mix patterns. :meth:`HAM.forward` finds the G distinct patterns present, runs h once
for them, sorts the batch by pattern once (:func:`hamfast.ops.make_group_plan`) and runs every
conv layer as one grouped convolution with that plan; batch norm is per pattern
(:class:`~hamfast.models.pattern_norm.PatternBatchNorm`) and the head is a batched matmul with
each sample's generated head. Each sample gets exactly what the task model of its own pattern
(:meth:`HAM.task_model`) gives it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hamfast import ops
from hamfast.models.cbrtiny import CBRTiny
from hamfast.models.hypernet import HyperNetwork
from hamfast.models.inputs import POOL_KERNEL, POOL_STRIDE, as_available, check_input, mask_missing
from hamfast.models.pattern_norm import PatternBatchNorm
from hamfast.patterns import all_patterns, code_to_mu, pattern_code

Tensor = torch.Tensor

__all__ = ["HAM", "BACKENDS", "NORMS", "output_placement", "split_parameters"]

BACKENDS = {"fused": ops.grouped_conv2d, "reference": ops.grouped_conv2d_reference}
NORMS = ("per-pattern", "shared")

HYPER_LAYERS = 4
# The pattern-dependent part of the initial last-layer weight, relative to the scale of PyTorch's
# default init of each generated tensor: small, so every pattern starts near a fresh CBRTiny.
INIT_SPREAD = 0.1


def _template_layout(template: CBRTiny) -> tuple[list[tuple[str, tuple[int, ...]]], Tensor, Tensor]:
    """The generated parameters of ``template``: names and shapes, the flat values, the init spreads.

    The spread of a conv/linear tensor is ``INIT_SPREAD / sqrt(fan_in)`` (PyTorch's default init
    draws from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``); for batch-norm affine parameters (init 1 and
    0) it is ``INIT_SPREAD``.
    """
    layout, values, spreads = [], [], []
    for module_name, module in template.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if isinstance(module, nn.BatchNorm2d):
                scale = 1.0
            else:
                scale = 1.0 / math.sqrt(module.weight[0].numel())
            layout.append((f"{module_name}.{param_name}", tuple(param.shape)))
            values.append(param.detach().flatten())
            spreads.append(torch.full((param.numel(),), INIT_SPREAD * scale))
    return layout, torch.cat(values), torch.cat(spreads)


# Elements: every generated tensor starts a multiple of 32 bytes (float32) into h's output, and one
# pattern's output row spans a multiple of it, so the CUDA kernels read each pattern's weights in
# place with 16-byte copies (bf16 / f16 too).
ALIGN = 8


def _slots(layout: list[tuple[str, tuple[int, ...]]]) -> tuple[list[int], int]:
    """Where each tensor of ``layout`` starts in h's output, and the output width P' (>= P)."""
    starts, end = [], 0
    for _, shape in layout:
        start = -(-end // ALIGN) * ALIGN
        starts.append(start)
        end = start + math.prod(shape)
    return starts, -(-end // ALIGN) * ALIGN


def output_placement(layout: list[tuple[str, tuple[int, ...]]]) -> tuple[Tensor, int]:
    """Where the hypernetwork emits each generated parameter.

    Conv weights ``[Cout, Cin, kh, kw]`` are emitted Cin-fastest, i.e. in the ``[Cout, kh, kw, Cin]``
    order the CUDA kernels read (forward and grad-input) and write (grad-weight), so a generated
    weight needs no per-call permute; every other tensor keeps PyTorch's order. Each tensor starts
    at a multiple of :data:`ALIGN` and the unused outputs in between stay zero.

    Returns:
        ``placement`` int64 [P]: the output index of each parameter, the parameters flattened in
        PyTorch's order (``layout``'s tensors, each row-major, one after another); and the output
        width P'.
    """
    _, width = _slots(layout)
    # split_parameters is the one place that knows the layout: ask it where each element sits.
    index = split_parameters(torch.arange(width, device="cpu")[None], layout)
    parts = [t[0].flatten() for t in index.values()]
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device="cpu")), width


def split_parameters(flat: Tensor, layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, Tensor]:
    """The hypernetwork's output ``flat`` [G, P'] (placed by :func:`output_placement`) as
    ``{name: [G, *shape]}`` views, no data copied.

    Conv weights come out as ``[G, Cout, Cin, kh, kw]`` whose memory is ``[Cout, kh, kw, Cin]`` per
    pattern, the patterns P' elements apart: what the CUDA kernels read in place.
    """
    starts, width = _slots(layout)
    # One split (gaps included) rather than a slice per tensor: its backward is one concatenation,
    # where a slice's backward would fill and add a zero [G, P'] gradient per tensor.
    chunks, end = [], 0
    for (_, shape), start in zip(layout, starts):
        chunks += [start - end, math.prod(shape)]
        end = start + math.prod(shape)
    parts = flat.split(chunks + [width - end], dim=1)[1::2]
    params = {}
    for (name, shape), part in zip(layout, parts):
        if len(shape) == 4:
            cout, cin, kh, kw = shape
            params[name] = part.reshape(flat.shape[0], cout, kh, kw, cin).permute(0, 1, 4, 2, 3)
        else:
            params[name] = part.reshape((flat.shape[0],) + shape)
    return params


class HAM(nn.Module):
    """The hypernetwork and its generated CBRTiny, run on mixed-pattern batches.

    Args:
        in_channels: M, the modalities (the length of mu).
        num_classes: output classes of the task model.
        widths: conv block widths of the task model (the paper: 64, 128, 256, 512).
        hidden: hidden width of the hypernetwork (the paper: 4).
        kernel_size: conv kernel side of the task model (the paper: 5).
        backend: ``"fused"`` runs the convolutions with :func:`hamfast.ops.grouped_conv2d` (the
            compiled op), ``"reference"`` with :func:`hamfast.ops.grouped_conv2d_reference`
            (plain PyTorch, one conv per pattern).
        norm: ``"per-pattern"`` (default): batch-norm statistics per pattern group in training and
            per pattern in evaluation; ``"shared"``: one batch norm for every pattern, statistics
            of the whole batch in training and one running slot (the paper's plain CBRTiny task
            model; see :class:`~hamfast.models.pattern_norm.PatternBatchNorm`).
        frozen: the control without per-pattern weights: the hypernetwork's last weight is fixed
            at 0 (not trained), so every pattern gets the same generated CBRTiny (its learned bias)
            and only the batch-norm statistics stay per pattern.

    ``forward(x: [B, M, H, W], available: bool [B, M]) -> logits [B, num_classes]``; sample b is
    classified by the task model of ``mu = available[b]`` with its absent channels zeroed. Every
    sample needs at least one modality.

    The hypernetwork's last layer starts with the flat parameters of a default-initialised CBRTiny
    as its bias and a small weight, so the generated weights start at PyTorch's default scale.
    Batch-norm running statistics are kept per pattern in 2**M slots indexed by the pattern code
    (:func:`hamfast.patterns.pattern_code`); a pattern never seen in training keeps mean 0 and
    variance 1.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        hidden: int = 4,
        kernel_size: int = 5,
        backend: str = "fused",
        norm: str = "per-pattern",
        frozen: bool = False,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        template = CBRTiny(in_channels, num_classes, widths, kernel_size)
        self.in_channels = template.in_channels
        self.num_classes = template.num_classes
        self.widths = template.widths
        self.kernel_size = template.kernel_size
        self.hidden = int(hidden)
        self.backend = backend
        self.layout, base, spread = _template_layout(template)
        placement, width = output_placement(self.layout)
        self.hypernet = HyperNetwork(
            self.in_channels, base.numel(), hidden=self.hidden, num_layers=HYPER_LAYERS, base=base,
            spread=None if frozen else spread, placement=placement, width=width,
        )
        self.frozen = bool(frozen)
        if self.frozen:
            self.hypernet.out.weight.requires_grad_(False)
        self.norms = nn.ModuleList(
            PatternBatchNorm(w, num_slots=2**self.in_channels, shared=norm == "shared") for w in self.widths
        )

    def generate(self, mu: Tensor) -> dict[str, Tensor]:
        """The task-model parameters of each pattern.

        Args:
            mu: [G, M], bool or 0/1.

        Returns:
            ``{name: [G, *shape]}`` for every parameter of CBRTiny (``named_parameters`` names,
            e.g. ``"trunk.blocks.0.0.weight"`` [G, widths[0], M, k, k], ``"head.bias"`` [G, classes]).
        """
        weight = self.hypernet.out.weight
        flat = self.hypernet(torch.as_tensor(mu, device=weight.device).to(weight.dtype))  # [G, P]
        return split_parameters(flat, self.layout)

    @torch.no_grad()
    def diagnostics(self) -> dict:
        """How many distinct task models the hypernetwork gives the 2**M - 1 patterns.

        Returns:
            ``alive_units``: per hidden layer of h, the units whose ReLU output is positive for at
            least one pattern (a unit dead for every pattern passes nothing on); ``hidden``: the
            hidden width; ``distinct_models``: how many different generated parameter vectors the
            patterns get (patterns whose last hidden activations are equal get the same task model
            exactly); ``patterns``: 2**M - 1. Frozen: 1 distinct model.
        """
        weight = self.hypernet.out.weight
        h = all_patterns(self.in_channels).to(device=weight.device, dtype=weight.dtype)
        alive = []
        for layer in self.hypernet.body:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                alive.append(int((h > 0).any(0).sum()))
        distinct = 1 if self.frozen else int(torch.unique(h, dim=0).shape[0])
        return {"alive_units": alive, "hidden": self.hidden, "distinct_models": distinct, "patterns": int(h.shape[0])}

    def forward(self, x: Tensor, available: Tensor) -> Tensor:
        check_input(x, self.in_channels, len(self.widths), self.kernel_size)
        available = as_available(available, x)
        codes = pattern_code(available)  # [B]
        empty = codes == 0
        if bool(empty.any()):
            raise ValueError(
                f"available row {int(empty.nonzero()[0])} has no modality: HAM needs at least one "
                "modality per sample (the empty pattern has no task model)"
            )
        slots, group = torch.unique(codes, return_inverse=True)  # slots [G] sorted, group [B] in [0, G)
        plan = ops.make_group_plan(group, slots.numel(), validate=False)
        params = self.generate(code_to_mu(slots, self.in_channels))
        conv = BACKENDS[self.backend]
        h = mask_missing(x, available)
        for i, norm in enumerate(self.norms):
            prefix = f"trunk.blocks.{i}"
            h = conv(h, params[f"{prefix}.0.weight"], params[f"{prefix}.0.bias"], group, plan=plan)
            h = norm(h, plan, slots, params[f"{prefix}.1.weight"], params[f"{prefix}.1.bias"])
            h = F.max_pool2d(F.relu(h), POOL_KERNEL, POOL_STRIDE)
        features = h.mean((2, 3))  # [B, C]
        head_weight = params["head.weight"][group]  # [B, classes, C]
        return torch.bmm(head_weight, features[:, :, None])[:, :, 0] + params["head.bias"][group]

    def task_model(self, mu) -> CBRTiny:
        """The plain CBRTiny that HAM generates for one pattern, usable without the hypernetwork.

        Args:
            mu: bool or 0/1 [M] (t1, t1ce, t2, flair), or the pattern code as an int.

        Returns:
            A standalone CBRTiny (detached copies) on HAM's device, with the generated weights, the
            generated batch-norm affine parameters and this pattern's running statistics, in HAM's
            train/eval mode. Call it as ``model(x * mu[:, None, None])`` or ``model(x, available)``.
        """
        mu = torch.as_tensor(mu)
        if mu.dim() == 0:
            mu = code_to_mu(mu, self.in_channels)
        if tuple(mu.shape) != (self.in_channels,):
            raise ValueError(f"mu must be a pattern [{self.in_channels}] or a pattern code, got shape {tuple(mu.shape)}")
        code = int(pattern_code(mu))
        if code == 0:
            raise ValueError("mu is the empty pattern; it has no task model")
        device = self.hypernet.out.weight.device
        with torch.device("meta"):
            model = CBRTiny(self.in_channels, self.num_classes, self.widths, self.kernel_size)
        model = model.to_empty(device=device)
        with torch.no_grad():
            params = self.generate(mu[None])
            for name, param in model.named_parameters():
                param.copy_(params[name][0])
            slot = 0 if self.norm == "shared" else code
            for block, norm in zip(model.trunk.blocks, self.norms):
                bn = block[1]
                bn.eps, bn.momentum = norm.eps, norm.momentum
                bn.running_mean.copy_(norm.running_mean[slot])
                bn.running_var.copy_(norm.running_var[slot])
                bn.num_batches_tracked.copy_(norm.num_batches_tracked[slot])
        return model.train(self.training)
