"""BatchNorm over the global batch of a multi-process (DDP) run, on any process-group backend.

``torch.nn.SyncBatchNorm`` does this on CUDA only (its statistics kernels have no CPU implementation), so DDP
on CPUs (gloo) would normalise each process's share alone. ``train.sync_batchnorm=true`` uses torch's on a
GPU (through Lightning's flag) and this one elsewhere. Statistics in two passes (mean, then the squared
deviations), each summed over the processes by ``torch.distributed.nn.functional.all_reduce``, whose backward
sums the gradients over the processes too: the step's gradient is the global batch's, as SyncBatchNorm's.
Outside a process group of 2 or more, or in eval mode, it is plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in float32 at least
        c = xs.shape[1]
        local_n = torch.tensor([xs.numel() / c], dtype=xs.dtype, device=xs.device)
        total = all_reduce(torch.cat([xs.sum((0, 2, 3)), local_n]))
        n = total[-1].detach()
        mean = total[:c] / n
        var = all_reduce((xs - mean[None, :, None, None]).pow(2).sum((0, 2, 3))) / n  # biased, as BN normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (xs - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def replace_batchnorm(module: nn.Module, cls: type[nn.BatchNorm2d], **kwargs) -> nn.Module:
    """Replaces every BatchNorm2d in ``module`` by ``cls(..., **kwargs)`` sharing its parameters and buffers
    (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, cls):
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats, **kwargs)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, new)
        else:
            replace_batchnorm(child, cls, **kwargs)
    return module


def convert_global_bn(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of ``module`` normalised over the global batch of a DDP run (in place)."""
    return replace_batchnorm(module, GlobalBatchNorm2d)
