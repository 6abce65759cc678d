"""R independent models of one method stacked into one module, every conv layer one grouped conv.

Stacking R CBRTiny-based models gives each conv layer R weight sets ``[R, Cout, Cin, k, k]``; a
batch that concatenates the models' own mini-batches runs through each layer as ONE
:func:`hamfast.ops.grouped_conv2d` call with ``group[b]`` = the model of sample b (for HAM: the
(model, pattern) pair, each model's hypernetwork generating the weights of its own patterns).
Batch norm keeps statistics per group (:class:`~hamfast.models.pattern_norm.PatternBatchNorm`), so
every model normalises with its own samples only, exactly as it would alone. Nothing couples the
models: the gradient of the sum of their losses with respect to model r's slice is model r's own
gradient.

Every stacked model is built from R ordinary models (:func:`stack_models`) and gives each one back
(:meth:`copy_to`), so checkpoints, prediction and recalibration work on the ordinary models.

* :class:`StackedCBRTiny`: Standard and Dropout (R CBRTiny);
* :class:`StackedFeatImpute`: R FeatImpute, i.e. ``R * (M + 1)`` CBRTiny trunks (shared + one
  per modality) in one grouped conv per layer;
* :class:`StackedHAM`: R HAM.

``forward(x [B, M, H, W], available bool [B, M], model int64 [B]) -> (logits [B, classes], aux)``
where ``model[b]`` in ``[0, R)`` names the model that sees sample b, and ``aux`` is None or, for
FeatImpute, the auxiliary loss of each model present (dict ``r -> scalar``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hamfast import ops
from hamfast.models.cbrtiny import CBRTiny, CBRTrunk
from hamfast.models.featimpute import FeatImpute
from hamfast.models.ham import BACKENDS, HAM, split_parameters
from hamfast.models.inputs import POOL_KERNEL, POOL_STRIDE, as_available, check_input, mask_missing
from hamfast.models.pattern_norm import PatternBatchNorm
from hamfast.patterns import code_to_mu, pattern_code

Tensor = torch.Tensor

__all__ = ["StackedCBRTiny", "StackedFeatImpute", "StackedHAM", "stack_models"]


def _stack(tensors: Sequence[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


class _StackedTrunk(nn.Module):
    """S CBRTiny trunks (blocks + global average pooling) with weights ``[S, ...]``.

    ``forward(x [B, Cin, H, W], plan over S groups) -> features [B, widths[-1]]``; sample b runs
    through trunk ``plan.group[b]``.
    """

    def __init__(self, trunks: Sequence[CBRTrunk], backend: str = "fused"):
        super().__init__()
        first = trunks[0]
        self.in_channels, self.widths, self.kernel_size = first.in_channels, first.widths, first.kernel_size
        self.num_stacks = len(trunks)
        self.conv = BACKENDS[backend]
        blocks = [list(t.blocks) for t in trunks]
        self.conv_weight = nn.ParameterList(_stack([b[i][0].weight for b in blocks]) for i in range(len(self.widths)))
        self.conv_bias = nn.ParameterList(_stack([b[i][0].bias for b in blocks]) for i in range(len(self.widths)))
        self.norm_weight = nn.ParameterList(_stack([b[i][1].weight for b in blocks]) for i in range(len(self.widths)))
        self.norm_bias = nn.ParameterList(_stack([b[i][1].bias for b in blocks]) for i in range(len(self.widths)))
        self.norms = nn.ModuleList()
        for i, width in enumerate(self.widths):
            bn = blocks[0][i][1]
            norm = PatternBatchNorm(width, num_slots=self.num_stacks, eps=bn.eps, momentum=bn.momentum)
            with torch.no_grad():
                norm.running_mean.copy_(torch.stack([b[i][1].running_mean for b in blocks]))
                norm.running_var.copy_(torch.stack([b[i][1].running_var for b in blocks]))
                norm.num_batches_tracked.copy_(torch.stack([b[i][1].num_batches_tracked for b in blocks]))
            self.norms.append(norm)
        self.register_buffer("slots", torch.arange(self.num_stacks), persistent=False)

    def forward(self, x: Tensor, plan: ops.GroupPlan) -> Tensor:
        h = x
        for i, norm in enumerate(self.norms):
            h = self.conv(h, self.conv_weight[i], self.conv_bias[i], plan.group, plan=plan)
            h = norm(h, plan, self.slots, self.norm_weight[i], self.norm_bias[i])
            h = F.max_pool2d(F.relu(h), POOL_KERNEL, POOL_STRIDE)
        return h.mean((2, 3))

    def views(self, s: int) -> list[Tensor]:
        """Trunk s's tensors, in the order of :func:`_trunk_tensors`."""
        out = []
        for i, norm in enumerate(self.norms):
            out += [self.conv_weight[i][s], self.conv_bias[i][s], self.norm_weight[i][s], self.norm_bias[i][s],
                    norm.running_mean[s], norm.running_var[s], norm.num_batches_tracked[s]]
        return out


def _trunk_tensors(trunk: CBRTrunk) -> list[Tensor]:
    out = []
    for block in trunk.blocks:
        conv, bn = block[0], block[1]
        out += [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked]
    return out


class _Stacked(nn.Module):
    """What every stacked model shares: R, the group plan over models, copying to and from model r."""

    num_models: int

    def views(self, r: int) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def tensors_of(model: nn.Module) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def copy_to(self, r: int, model: nn.Module) -> nn.Module:
        """Write model r's parameters and buffers into ``model`` (an ordinary model of the method); returns it."""
        for src, dst in zip(self.views(r), self.tensors_of(model), strict=True):
            dst.copy_(src)
        return model

    @torch.no_grad()
    def copy_from(self, r: int, model: nn.Module) -> None:
        """Overwrite model r's slice with ``model``'s parameters and buffers."""
        for dst, src in zip(self.views(r), self.tensors_of(model), strict=True):
            dst.copy_(src)

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first axis runs over trunks rather than models (see :meth:`trunk_usage`)."""
        return []

    def trunk_usage(self, model: Tensor, available: Tensor) -> Optional[Tensor]:
        """bool [S]: which trunks a batch (``model`` [B], ``available`` bool [B, M]) runs through;
        None when the stacked model has no trunk parameters."""
        return None

    def _model_plan(self, x: Tensor, model: Tensor) -> tuple[Tensor, ops.GroupPlan]:
        model = torch.as_tensor(model, device=x.device).long()
        if model.shape != x.shape[:1]:
            raise ValueError(f"model must be int64 [B] = [{x.shape[0]}], got shape {tuple(model.shape)}")
        return model, ops.make_group_plan(model, self.num_models)


class StackedCBRTiny(_Stacked):
    """R CBRTiny classifiers (Standard, Dropout) stacked; see the module docstring.

    Args:
        models: R CBRTiny with the same in_channels, widths, kernel size and classes.
        backend: ``"fused"`` (:func:`hamfast.ops.grouped_conv2d`) or ``"reference"``.
    """

    def __init__(self, models: Sequence[CBRTiny], backend: str = "fused"):
        super().__init__()
        self.num_models = len(models)
        self.in_channels, self.num_classes = models[0].in_channels, models[0].num_classes
        self.trunk = _StackedTrunk([m.trunk for m in models], backend)
        self.head_weight = _stack([m.head.weight for m in models])  # [R, classes, C]
        self.head_bias = _stack([m.head.bias for m in models])  # [R, classes]

    def forward(self, x: Tensor, available: Optional[Tensor], model: Tensor) -> tuple[Tensor, None]:
        check_input(x, self.in_channels, len(self.trunk.widths), self.trunk.kernel_size)
        model, plan = self._model_plan(x, model)
        features = self.trunk(mask_missing(x, available), plan)  # [B, C]
        logits = torch.bmm(self.head_weight[model], features[:, :, None])[:, :, 0] + self.head_bias[model]
        return logits, None

    def trunk_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def trunk_usage(self, model: Tensor, available: Tensor) -> Tensor:
        return torch.bincount(model, minlength=self.num_models) > 0

    def views(self, r: int) -> list[Tensor]:
        return self.trunk.views(r) + [self.head_weight[r], self.head_bias[r]]

    @staticmethod
    def tensors_of(model: CBRTiny) -> list[Tensor]:
        return _trunk_tensors(model.trunk) + [model.head.weight, model.head.bias]


class StackedFeatImpute(_Stacked):
    """R FeatImpute models stacked: their ``R * (M + 1)`` trunks run as one grouped conv per layer.

    Trunk ``r * (M + 1)`` is model r's shared encoder, ``r * (M + 1) + 1 + m`` its encoder of
    modality m. Every present (sample, modality) pair goes through its model's shared trunk and
    its modality's specific trunk in the same call; fusion, imputation, the classifier and the
    auxiliary terms then follow :class:`~hamfast.models.featimpute.FeatImpute` model by model.
    """

    def __init__(self, models: Sequence[FeatImpute], backend: str = "fused"):
        super().__init__()
        first = models[0]
        if any(m.shared_input != "per-modality" for m in models):
            raise ValueError("StackedFeatImpute stacks the per-modality (ShaSpec) form only; a stacked shared encoder "
                             "trains model by model")
        self.num_models = len(models)
        self.in_channels, self.num_classes = first.in_channels, first.num_classes
        self.widths, self.kernel_size = first.widths, first.kernel_size
        self.consistency_weight, self.domain_weight = first.consistency_weight, first.domain_weight
        self.trunks_per_model = self.in_channels + 1
        self.trunks = _StackedTrunk([t for m in models for t in (m.shared, *m.specific)], backend)
        for name in ("fusion", "classifier", "domain_classifier"):
            setattr(self, f"{name}_weight", _stack([getattr(m, name).weight for m in models]))
            setattr(self, f"{name}_bias", _stack([getattr(m, name).bias for m in models]))

    def forward(self, x: Tensor, available: Tensor, model: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        check_input(x, self.in_channels, len(self.widths), self.kernel_size)
        available = as_available(available, x)
        if not bool(available.any(1).all()):
            row = int((~available.any(1)).nonzero()[0])
            raise ValueError(f"available row {row} has no modality: FeatImpute needs at least one per sample")
        model, plan = self._model_plan(x, model)
        x = mask_missing(x, available)
        batch, modality = available.nonzero(as_tuple=True)  # the K present (sample, modality) pairs
        singles = x[batch, modality][:, None]  # [K, 1, H, W]
        owner = model[batch] * self.trunks_per_model
        trunk = torch.cat([owner, owner + 1 + modality])  # shared trunks, then specific trunks
        features = self.trunks(torch.cat([singles, singles]), ops.make_group_plan(trunk, self.trunks.num_stacks, validate=False))
        k = batch.numel()
        shape = (x.shape[0], self.in_channels, self.widths[-1])
        shared = x.new_zeros(shape).index_put((batch, modality), features[:k])
        specific = x.new_zeros(shape).index_put((batch, modality), features[k:])
        logits = x.new_empty((x.shape[0], self.num_classes))
        aux = {}
        offsets = plan.offsets.tolist()
        for r in range(self.num_models):
            if offsets[r + 1] == offsets[r]:
                continue
            rows = plan.order[offsets[r] : offsets[r + 1]]
            logits_r, aux[r] = self._model_head(r, shared[rows], specific[rows], available[rows])
            logits = logits.index_put((rows,), logits_r)
        return logits, aux

    def _model_head(self, r: int, shared: Tensor, specific: Tensor, available: Tensor) -> tuple[Tensor, Tensor]:
        """Model r's fusion, imputation, classifier and auxiliary loss (as FeatImpute.encode/classify/auxiliary_loss)."""
        fused = shared + F.linear(torch.cat([shared, specific], dim=2), self.fusion_weight[r], self.fusion_bias[r])
        first = available.long().argmax(1)
        imputed = shared[torch.arange(shared.shape[0], device=shared.device), first]
        fused = torch.where(available[:, :, None], fused, imputed[:, None, :])
        logits = F.linear(fused.flatten(1), self.classifier_weight[r], self.classifier_bias[r])
        i, j = torch.triu_indices(self.in_channels, self.in_channels, offset=1, device=shared.device)
        both = (available[:, i] & available[:, j]).to(shared.dtype)
        distance = (shared[:, i] - shared[:, j]).abs().mean(-1)
        consistency = (distance * both).sum() / both.sum().clamp(min=1)
        batch, modality = available.nonzero(as_tuple=True)
        domain_logits = F.linear(specific[batch, modality], self.domain_classifier_weight[r], self.domain_classifier_bias[r])
        domain = F.cross_entropy(domain_logits, modality)
        return logits, self.consistency_weight * consistency + self.domain_weight * domain

    def trunk_parameters(self) -> list[nn.Parameter]:
        return list(self.trunks.parameters())

    def trunk_usage(self, model: Tensor, available: Tensor) -> Tensor:
        """Model r's shared trunk when r has samples, its trunk of modality m when one of them has m
        (FeatImpute only calls the specific encoders of the modalities present)."""
        used = torch.zeros(self.num_models, self.trunks_per_model, dtype=torch.bool, device=model.device)
        used[model, 0] = True
        batch, modality = torch.as_tensor(available, device=model.device).bool().nonzero(as_tuple=True)
        used[model[batch], 1 + modality] = True
        return used.flatten()

    def views(self, r: int) -> list[Tensor]:
        out = []
        for t in range(self.trunks_per_model):
            out += self.trunks.views(r * self.trunks_per_model + t)
        for name in ("fusion", "classifier", "domain_classifier"):
            out += [getattr(self, f"{name}_weight")[r], getattr(self, f"{name}_bias")[r]]
        return out

    @staticmethod
    def tensors_of(model: FeatImpute) -> list[Tensor]:
        out = []
        for trunk in (model.shared, *model.specific):
            out += _trunk_tensors(trunk)
        for layer in (model.fusion, model.classifier, model.domain_classifier):
            out += [layer.weight, layer.bias]
        return out


def _hyper_layers(model: HAM) -> list[nn.Linear]:
    return [m for m in model.hypernet.body if isinstance(m, nn.Linear)] + [model.hypernet.out]


class StackedHAM(_Stacked):
    """R HAM models stacked: group = (model, pattern), each model's hypernetwork generating the task
    weights of the patterns its samples carry.

    Batch-norm statistics are kept per (model, pattern) in slot ``r * 2**M + code``.
    """

    def __init__(self, models: Sequence[HAM], backend: Optional[str] = None):
        super().__init__()
        first = models[0]
        self.num_models = len(models)
        self.in_channels, self.num_classes = first.in_channels, first.num_classes
        self.widths, self.kernel_size = first.widths, first.kernel_size
        self.layout = first.layout
        self.conv = BACKENDS[backend or first.backend]
        self.codes = 2**self.in_channels
        layers = [_hyper_layers(m) for m in models]
        self.hyper_weight = nn.ParameterList(_stack([l[i].weight for l in layers]) for i in range(len(layers[0])))
        self.hyper_bias = nn.ParameterList(_stack([l[i].bias for l in layers]) for i in range(len(layers[0])))
        self.norms = nn.ModuleList()
        for i, width in enumerate(self.widths):
            src = [m.norms[i] for m in models]
            norm = PatternBatchNorm(width, num_slots=self.num_models * self.codes, eps=src[0].eps, momentum=src[0].momentum)
            with torch.no_grad():
                norm.running_mean.copy_(torch.cat([n.running_mean for n in src]))
                norm.running_var.copy_(torch.cat([n.running_var for n in src]))
                norm.num_batches_tracked.copy_(torch.cat([n.num_batches_tracked for n in src]))
            self.norms.append(norm)

    def generate(self, mu: Tensor, owner: Tensor) -> dict[str, Tensor]:
        """Task parameters ``{name: [G, *shape]}`` for pattern ``mu[g]`` (float [G, M]) of model
        ``owner[g]`` (int64 [G], non-decreasing), each from its own model's hypernetwork."""
        counts = torch.bincount(owner, minlength=self.num_models).tolist()
        parts, start = [], 0
        for r, count in enumerate(counts):
            if count == 0:
                continue
            h = mu[start : start + count]
            last = len(self.hyper_weight) - 1
            for i, (weight, bias) in enumerate(zip(self.hyper_weight, self.hyper_bias)):
                h = F.linear(h, weight[r], bias[r])
                if i < last:
                    h = F.relu(h)
            parts.append(h)
            start += count
        return split_parameters(torch.cat(parts), self.layout)  # from [G, P]

    def forward(self, x: Tensor, available: Tensor, model: Tensor) -> tuple[Tensor, None]:
        check_input(x, self.in_channels, len(self.widths), self.kernel_size)
        available = as_available(available, x)
        codes = pattern_code(available)
        if bool((codes == 0).any()):
            raise ValueError("a sample has no modality: HAM needs at least one modality per sample")
        model = torch.as_tensor(model, device=x.device).long()
        slots, group = torch.unique(model * self.codes + codes, return_inverse=True)  # sorted: by model, then code
        plan = ops.make_group_plan(group, slots.numel(), validate=False)
        weight = self.hyper_weight[0]
        params = self.generate(code_to_mu(slots % self.codes, self.in_channels).to(weight.dtype), slots // self.codes)
        h = mask_missing(x, available)
        for i, norm in enumerate(self.norms):
            prefix = f"trunk.blocks.{i}"
            h = self.conv(h, params[f"{prefix}.0.weight"], params[f"{prefix}.0.bias"], group, plan=plan)
            h = norm(h, plan, slots, params[f"{prefix}.1.weight"], params[f"{prefix}.1.bias"])
            h = F.max_pool2d(F.relu(h), POOL_KERNEL, POOL_STRIDE)
        features = h.mean((2, 3))
        head_weight = params["head.weight"][group]
        return torch.bmm(head_weight, features[:, :, None])[:, :, 0] + params["head.bias"][group], None

    def views(self, r: int) -> list[Tensor]:
        out = []
        for weight, bias in zip(self.hyper_weight, self.hyper_bias):
            out += [weight[r], bias[r]]
        rows = slice(r * self.codes, (r + 1) * self.codes)
        for norm in self.norms:
            out += [norm.running_mean[rows], norm.running_var[rows], norm.num_batches_tracked[rows]]
        return out

    @staticmethod
    def tensors_of(model: HAM) -> list[Tensor]:
        out = []
        for layer in _hyper_layers(model):
            out += [layer.weight, layer.bias]
        for norm in model.norms:
            out += [norm.running_mean, norm.running_var, norm.num_batches_tracked]
        return out


def stack_models(models: Sequence[nn.Module], backend: str = "fused") -> _Stacked:
    """The stacked model of R ordinary models of one method (all CBRTiny, all FeatImpute or all HAM,
    with the same architecture), on the models' device and dtype. ``backend`` picks the grouped conv
    for the baselines; HAM keeps its own."""
    if len(models) == 0:
        raise ValueError("stack_models needs at least one model")
    kind = type(models[0])
    if any(type(m) is not kind for m in models):
        raise ValueError(f"stack_models needs models of one class, got {sorted({type(m).__name__ for m in models})}")
    shapes = [[tuple(t.shape) for t in m.state_dict().values()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("stack_models needs models of the same architecture (widths, kernel size, classes)")
    like = next(models[0].parameters())
    if kind is CBRTiny:
        return StackedCBRTiny(models, backend).to(like)
    if kind is FeatImpute:
        return StackedFeatImpute(models, backend).to(like)
    if kind is HAM:
        return StackedHAM(models).to(like)
    raise ValueError(f"cannot stack {kind.__name__} models (CBRTiny, FeatImpute and HAM can be stacked)")
