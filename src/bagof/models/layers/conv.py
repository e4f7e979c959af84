"""Darknet's ``[convolutional]`` with ``batch_normalize=1``: conv (no bias) -> BN -> activation."""

from __future__ import annotations

import math

import torch
from torch import nn

from .activations import create_act


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Scaled width rounded to a multiple of ``divisor`` (never below it)."""
    return max(divisor, int(math.ceil(channels / divisor) * divisor))


# PyTorch's CPU BatchNorm in training, on an NHWC (``train.channels_last``) bfloat16 input of under 16 channels,
# loops over the channels where it vectorises over them: 8 channels at 8x128x128 take 5.3 ms forward + backward
# against 0.9 ms in NCHW (2 threads, torch 2.13). oneDNN's convolutions meanwhile run 3.4x faster in NHWC there, so
# such layers keep their convolution in NHWC and normalise (and activate) in NCHW, at the cost of two copies.
_NHWC_SLOW_BN_CHANNELS = 16


class _Relayout(torch.autograd.Function):
    """``x`` copied into memory ``layout``; its gradient copied back into ``back`` (``Tensor.contiguous`` would
    hand the gradient on in whatever layout it arrives, and the layers before expect theirs)."""

    @staticmethod
    def forward(ctx, x, layout, back):
        ctx.back = back
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.back), None, None


def _slow_nhwc_bn(x: torch.Tensor, bn: nn.Module) -> bool:
    return (
        bn.training
        and isinstance(bn, nn.modules.batchnorm._BatchNorm)
        and x.device.type == "cpu"
        and x.dtype in (torch.bfloat16, torch.float16)
        and x.shape[1] < _NHWC_SLOW_BN_CHANNELS
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


class ConvBNAct(nn.Sequential):
    def __init__(
        self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: str = "leaky", groups: int = 1, dilation: int = 1
    ):
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, padding=dilation * (k // 2), groups=groups, bias=False, dilation=dilation),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.03),
            create_act(act),
        )
        self.c_out = c_out

    def forward(self, x):
        conv, bn, act = self
        x = conv(x)
        if _slow_nhwc_bn(x, bn):
            x = _Relayout.apply(x, torch.contiguous_format, torch.channels_last)
            return _Relayout.apply(act(bn(x)), torch.channels_last, torch.contiguous_format)
        return act(bn(x))
