"""Fast normalised fusion (EfficientDet; REFERENCE.md "BiFPN", "MiWRC"):
``O = sum_i w_i I_i / (eps + sum_j w_j)`` with ``w_i = relu(learned)`` and eps 1e-4.
Used for BiFPN's node inputs and MiWRC's weighted residual sums."""

from __future__ import annotations

import torch
from torch import nn


class WeightedSum(nn.Module):
    def __init__(self, n: int, eps: float = 1e-4):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def normalized(self) -> torch.Tensor:
        w = torch.relu(self.weight)
        return w / (w.sum() + self.eps)

    def forward(self, inputs) -> torch.Tensor:
        w = self.normalized()
        return sum(wi * x for wi, x in zip(w, inputs))
