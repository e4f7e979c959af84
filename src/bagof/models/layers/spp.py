"""Spatial pyramid pooling as in YOLOv3-SPP / YOLOv4 (REFERENCE.md "SPP")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SPP(nn.Module):
    """Stride-1 max pools (same padding) concatenated as [pool13, pool9, pool5, input] (darknet order).

    Computed as a chain where it is exact (YOLOv5's SPPF identity): a stride-1 max pool of size a + b - 1 equals
    a pool of size a applied after one of size b (both pad with -inf), so 9 = 5 then 5 and 13 = 9 then 5; the
    outputs are the same as Darknet's three independent pools at ~1/3 of the comparisons.
    """

    def __init__(self, kernels=(5, 9, 13)):
        super().__init__()
        self.kernels = sorted(kernels)
        k0 = self.kernels[0]
        self.chain = all(b - a == k0 - 1 for a, b in zip(self.kernels, self.kernels[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs, y = [], x
        for k in self.kernels:
            step = self.kernels[0] if self.chain else k
            y = F.max_pool2d(y if self.chain else x, step, 1, step // 2)
            outs.append(y)
        return torch.cat(outs[::-1] + [x], 1)
