"""Darknet's ``[convolutional]`` with ``batch_normalize=1``: conv (no bias) -> BN -> activation."""

from __future__ import annotations

import math

from torch import nn

from .activations import create_act


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Scaled width rounded to a multiple of ``divisor`` (never below it)."""
    return max(divisor, int(math.ceil(channels / divisor) * divisor))


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
