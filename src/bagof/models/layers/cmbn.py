"""CmBN, Cross mini-Batch Normalization (REFERENCE.md "CBN, CmBN").

A batch is processed as T accumulated mini-batches. Mini-batch t is normalised with the mean and
E[x^2] averaged over mini-batches 1..t of the same batch (weight 1/t each; the earlier ones enter as
constants, their graphs are gone), so the last mini-batch sees the statistics of the whole batch.
``reset()`` starts a new batch; the ``bagof.callbacks.CmBN`` callback calls it at every optimizer step
boundary. In eval mode it is plain BatchNorm with running statistics.

Written here because no library ships it (torch has BatchNorm and SyncBatchNorm only).
"""

from __future__ import annotations

import torch
from torch import nn

from .global_bn import replace_batchnorm


class CmBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset()

    def reset(self) -> None:
        self._steps = 0
        self._sum_mean = None
        self._sum_sq = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        mean = x.mean((0, 2, 3))
        sq = (x * x).mean((0, 2, 3))
        if self._steps:
            acc_mean = (self._sum_mean + mean) / (self._steps + 1)
            acc_sq = (self._sum_sq + sq) / (self._steps + 1)
        else:
            acc_mean, acc_sq = mean, sq
        var = (acc_sq - acc_mean * acc_mean).clamp_min(0)
        self._steps += 1
        self._sum_mean = mean.detach() if self._sum_mean is None else self._sum_mean + mean.detach()
        self._sum_sq = sq.detach() if self._sum_sq is None else self._sum_sq + sq.detach()
        with torch.no_grad():
            n = x.numel() / x.shape[1] * self._steps  # elements behind the accumulated statistics
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * acc_mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))  # unbiased, as BN does
            self.num_batches_tracked += 1
        y = (x - acc_mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def convert_cmbn(module: nn.Module) -> nn.Module:
    """Replaces every BatchNorm2d in ``module`` by a CmBatchNorm2d sharing its parameters and buffers."""
    return replace_batchnorm(module, CmBatchNorm2d)
