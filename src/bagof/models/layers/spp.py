"""Spatial pyramid pooling as in YOLOv3-SPP / YOLOv4 (REFERENCE.md "SPP")."""

from __future__ import annotations

import torch
from torch import nn


class SPP(nn.Module):
    """Stride-1 max pools (same padding) concatenated as [pool13, pool9, pool5, input] (darknet order)."""

    def __init__(self, kernels=(5, 9, 13)):
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in sorted(kernels, reverse=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.pools] + [x], 1)
