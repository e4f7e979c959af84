"""CmBN, Cross mini-Batch Normalization (REFERENCE.md "CBN, CmBN").

A batch is processed as T accumulated mini-batches. Mini-batch t is normalised with the mean and
E[x^2] averaged over mini-batches 1..t of the same batch (weight 1/t each; the earlier ones enter as
constants, their graphs are gone), so the last mini-batch sees the statistics of the whole batch.
``reset()`` starts a new batch; the ``CmBN`` callback (below) calls it at every optimizer step
boundary. In eval mode it is plain BatchNorm with running statistics.

Gradient (``grad``): ``darknet`` (default, the reference's) back-propagates as Darknet's BN backward does with
the accumulated statistics in place of the mini-batch's (normalize_delta / cuDNN's backward with the saved mean
and variance): the current mini-batch is differentiated as if the statistics were its own,
``dx = (gamma / (N sigma)) (N dy - sum dy - x_hat sum(dy x_hat))``, N its elements per channel. ``exact``
differentiates this module's forward, where the current mini-batch holds only a 1/t share of the statistics
(the same at t = 1).

The statistics are computed in ``stats_dtype`` (float32, as the reference's BN) whatever the activations' dtype:
under bfloat16 autocast E[x^2] - E[x]^2 cancels to noise when a channel's mean is large against its spread
(outputs of sd ~30 where BN's are 1: tests/test_freebies.py).

Written here because no library ships it (torch has BatchNorm and SyncBatchNorm only).
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch import nn

from ...errors import BagofError
from .global_bn import replace_batchnorm

STATS_DTYPES = {"float32": torch.float32, "float64": torch.float64}
GRADS = ("darknet", "exact")


def stats_dtype_of(name: str) -> torch.dtype:
    if name not in STATS_DTYPES:
        raise BagofError(
            f"CmBN stats_dtype={name!r} (train.callbacks.cmbn.stats_dtype): choose one of {', '.join(STATS_DTYPES)} "
            "(float32 is the reference's)"
        )
    return STATS_DTYPES[name]


def check_grad(name: str) -> str:
    if name not in GRADS:
        raise BagofError(
            f"CmBN grad={name!r} (train.callbacks.cmbn.grad): choose darknet (the reference's BN backward with the "
            "accumulated statistics) or exact (the gradient of the forward, the current mini-batch's 1/t share)"
        )
    return name


class CmBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, *args, stats_dtype: str = "float32", grad: str = "darknet", **kwargs):
        super().__init__(*args, **kwargs)
        self.stats_dtype = stats_dtype_of(stats_dtype)
        self.grad = check_grad(grad)
        self.reset()

    def reset(self) -> None:
        self._steps = 0
        self._sum_mean = None
        self._sum_sq = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        xs = x.to(torch.promote_types(x.dtype, self.stats_dtype))
        mean = xs.mean((0, 2, 3))
        sq = (xs * xs).mean((0, 2, 3))
        if self._steps:
            acc_mean = (self._sum_mean + mean) / (self._steps + 1)
            acc_sq = (self._sum_sq + sq) / (self._steps + 1)
        else:
            acc_mean, acc_sq = mean, sq
        var = (acc_sq - acc_mean * acc_mean).clamp_min(0)
        if self._steps and self.grad == "darknet":  # the values above, the gradient of the mini-batch's own BN
            mu = acc_mean.detach()
            own_var = ((xs - mu[None, :, None, None]) ** 2).mean((0, 2, 3))  # about mu: no mean term, as Darknet
            acc_mean = mean + (acc_mean - mean).detach()
            var = own_var + (var - own_var).detach()
        self._steps += 1
        self._sum_mean = mean.detach() if self._sum_mean is None else self._sum_mean + mean.detach()
        self._sum_sq = sq.detach() if self._sum_sq is None else self._sum_sq + sq.detach()
        with torch.no_grad():
            n = x.numel() / x.shape[1] * self._steps  # elements behind the accumulated statistics
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * acc_mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))  # unbiased, as BN does
            self.num_batches_tracked += 1
        y = (xs - acc_mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)  # as BatchNorm: the activations' dtype out


def convert_cmbn(module: nn.Module, stats_dtype: str = "float32", grad: str = "darknet") -> nn.Module:
    """Replaces every BatchNorm2d in ``module`` by a CmBatchNorm2d sharing its parameters and buffers."""
    return replace_batchnorm(module, CmBatchNorm2d, stats_dtype=stats_dtype, grad=grad)


# Table 4 "CBN" in the loop (a Lightning callback, train.callbacks.cmbn): turns the model's BatchNorm layers into
# CmBN and starts their accumulation window at every batch (every ``train.accumulate`` mini-batches, where
# Lightning steps the optimizer).
log = logging.getLogger("bagof")


class CmBN(L.Callback):
    def __init__(self, stats_dtype: str = "float32", grad: str = "darknet"):
        stats_dtype_of(stats_dtype)  # a wrong name fails at instantiation, naming the choices
        self.stats_dtype, self.grad = stats_dtype, check_grad(grad)

    def setup(self, trainer, pl_module, stage):
        if trainer.world_size > 1:  # its window spans one process's mini-batches; a global one is not written
            raise BagofError(
                f"CmBN (+bof=cmbn) accumulates statistics over one process's mini-batches and does not run under "
                f"DDP ({trainer.world_size} processes): train on one device (train.devices=1), or use "
                "train.sync_batchnorm=true for BatchNorm over the global batch instead"
            )
        convert_cmbn(pl_module.model, self.stats_dtype, self.grad)
        if trainer.accumulate_grad_batches == 1:
            log.warning(
                "CmBN with train.accumulate=1 is plain BatchNorm: split the batch into mini-batches "
                "(e.g. data.batch_size=4 train.accumulate=2) for it to differ"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % trainer.accumulate_grad_batches == 0:
            for m in pl_module.model.modules():
                if isinstance(m, CmBatchNorm2d):
                    m.reset()
