"""Pieces shared by the backbones: width/depth scaling and the residual add."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import make_divisible
from ..layers.fusion import WeightedSum


class Scaler:
    """Width/depth multipliers (YOLOv5-style compound scaling) for building at paper or CPU size."""

    def __init__(self, width: float = 1.0, depth: float = 1.0):
        self.width, self.depth = width, depth

    def c(self, channels: int) -> int:
        return channels if self.width == 1.0 else make_divisible(channels * self.width)

    def n(self, blocks: int) -> int:
        return blocks if self.depth == 1.0 else max(1, math.ceil(blocks * self.depth))


def shortcut_add(x: torch.Tensor, residual: torch.Tensor, fuse: WeightedSum | None = None) -> torch.Tensor:
    """Darknet's ``[shortcut]``: adds over the channels both have (zero-pads the narrower input).
    ``fuse`` (MiWRC): a learned fast-normalised weighted sum instead of the plain sum."""
    if residual.shape[1] < x.shape[1]:
        residual = F.pad(residual, (0, 0, 0, 0, 0, x.shape[1] - residual.shape[1]))
    elif residual.shape[1] > x.shape[1]:
        residual = residual[:, : x.shape[1]]
    return x + residual if fuse is None else fuse([x, residual])


class Backbone(nn.Module):
    """A stem then ``stages``; returns the outputs of the last three stages (strides 8, 16, 32).

    Subclasses build ``stem`` and ``stages`` and call ``_finish`` with each stage's output channels.
    """

    out_channels: tuple[int, int, int]
    #: channels of the last stage (the classifier head's input)
    num_features: int

    def _finish(self, stage_channels: list[int]) -> None:
        self.out_channels = tuple(stage_channels[-3:])
        self.num_features = stage_channels[-1]
        self._first_out = len(stage_channels) - 3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self._first_out:
                outs.append(x)
        return outs
