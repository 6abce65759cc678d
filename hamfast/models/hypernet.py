"""The hypernetwork h: a small MLP from the modality pattern mu to a flat parameter vector.

``h(mu) = L4(relu(L3(relu(L2(relu(L1(mu)))))))`` with hidden size 4 (the paper's bottleneck); the
last layer has one output per generated parameter. Its bias is set to a reference parameter vector
(a freshly initialised task model) and its weight to small values, so at the start every pattern
gets weights at the scale of PyTorch's default initialisation, varied a little per pattern.
"""
from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor

__all__ = ["HyperNetwork", "place_rows"]


def place_rows(rows: Tensor, placement: Tensor, width: int) -> Tensor:
    """``rows`` [P, ...] put at rows ``placement`` (int64 [P]) of a zero tensor [width, ...]: the last
    layer's per-output rows moved to the outputs a placement gives them."""
    return rows.new_zeros((width,) + tuple(rows.shape[1:])).index_copy_(0, placement.to(rows.device), rows)


class HyperNetwork(nn.Module):
    """MLP ``[G, in_features] -> [G, out_features]`` with ReLU between its Linear layers.

    Args:
        in_features: length of the pattern vector (4 modalities).
        out_features: P, the number of generated parameters.
        hidden: width of the hidden layers.
        num_layers: Linear layers in all (at least 2).
        base: float [P], the output at initialisation for any input (the last layer's bias).
        spread: float [P] or None, per-output scale of the last layer's initial weight:
            ``weight[p, j] ~ U(-spread[p], spread[p])``. None gives zeros (every pattern starts at
            ``base``).
        placement: int64 [P] or None: parameter p is output ``placement[p]`` of the last layer, whose
            ``width`` outputs the others leave zero and unused (the caller's memory layout, e.g.
            aligned and permuted for the kernels). The initial values are drawn in parameter order
            either way, so a seed gives the same parameters whatever the placement. None: output p.
        width: the last layer's outputs when ``placement`` is given (> every placement).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 4,
        num_layers: int = 4,
        base: Tensor | None = None,
        spread: Tensor | None = None,
        placement: Tensor | None = None,
        width: int | None = None,
    ):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        sizes = [in_features] + [hidden] * (num_layers - 1)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, out_features)
        with torch.no_grad():
            for name, t in (("base", base), ("spread", spread)):
                if t is not None and tuple(t.shape) != (out_features,):
                    raise ValueError(f"{name} must have shape [{out_features}], got {tuple(t.shape)}")
            self.out.bias.copy_(base if base is not None else torch.zeros(out_features))
            if spread is None:
                self.out.weight.zero_()
            else:
                self.out.weight.uniform_(-1.0, 1.0).mul_(spread[:, None])
        if placement is not None:
            if width is None or tuple(placement.shape) != (out_features,) or (
                out_features and placement.device.type != "meta"
                and not 0 <= int(placement.min()) <= int(placement.max()) < width
            ):
                raise ValueError(f"placement must be [{out_features}] positions below width, got "
                                 f"{tuple(placement.shape)} and width {width}")
            placed = nn.Linear(hidden, width, device="meta")
            placed.weight = nn.Parameter(place_rows(self.out.weight, placement, width))
            placed.bias = nn.Parameter(place_rows(self.out.bias, placement, width))
            self.out = placed

    def forward(self, mu: Tensor) -> Tensor:
        """``mu`` float [G, in_features] -> flat parameters [G, out_features] (or [G, width], placed)."""
        return self.out(self.body(mu))
