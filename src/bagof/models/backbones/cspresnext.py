"""CSPResNeXt50, the ablation tables' backbone (darknet-cfg ``csresnext50-panet-spp.cfg``, layers 0-80).

Stem 7x7/2 + maxpool 2/2, then four CSP stages of ResNeXt bottlenecks (1x1 -> 3x3 with 32 groups ->
1x1 linear, shortcut) with 3, 3, 5, 2 blocks (ResNeXt50's 3, 4, 6, 3 less the one CSP replaces).
Stages 2-4 downsample with a grouped 3x3/2 conv. Following the cfg, the two split convs are linear
in stages 2 and 3 and use the activation in stages 1 and 4; the stage-1 block input is 64 wide while
the block is 128 wide, which Darknet's shortcut handles by adding over the common channels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import ConvBNAct, create_act
from .common import Backbone, Scaler, shortcut_add


def _groups(channels: int, cardinality: int = 32) -> int:
    return math.gcd(channels, cardinality)


class ResNeXtBlock(nn.Module):
    def __init__(self, c_in: int, c: int, act: str):
        super().__init__()
        self.cv1 = ConvBNAct(c_in, c, 1, act=act)
        self.cv2 = ConvBNAct(c, c, 3, act=act, groups=_groups(c))
        self.cv3 = ConvBNAct(c, c, 1, act="linear")
        self.act = create_act(act)  # darknet applies the activation after the shortcut add

    def forward(self, x):
        return self.act(shortcut_add(self.cv3(self.cv2(self.cv1(x))), x))


class CSPResNeXtStage(nn.Module):
    def __init__(self, c_in: int, c: int, n: int, act: str, stage: int, s: Scaler):
        super().__init__()
        if stage == 0:  # stride 4 already reached by the stem; no down-sampling conv
            self.down = nn.Identity()
            c_down, c_blocks_in = c_in, s.c(64)
        else:
            self.down = ConvBNAct(c_in, c, 3, 2, act, groups=_groups(c))
            c_down, c_blocks_in = c, c
        split_act = "linear" if stage in (1, 2) else act
        self.part1 = ConvBNAct(c_down, c, 1, act=split_act)
        self.part2 = ConvBNAct(c_down, c_blocks_in, 1, act=split_act)
        blocks = [ResNeXtBlock(c_blocks_in if i == 0 else c, c, act) for i in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.transition = ConvBNAct(c, c, 1, act=act)
        self.fuse = ConvBNAct(2 * c, 2 * c, 1, act=act)

    def forward(self, x):
        x = self.down(x)
        return self.fuse(torch.cat([self.transition(self.blocks(self.part2(x))), self.part1(x)], 1))


class CSPResNeXt50(Backbone):
    DEPTHS = (3, 3, 5, 2)
    WIDTHS = (128, 256, 512, 1024)  # block width; each stage outputs twice this

    def __init__(self, width: float = 1.0, depth: float = 1.0, act: str = "leaky"):
        super().__init__()
        s = Scaler(width, depth)
        c = s.c(64)
        self.stem = nn.Sequential(ConvBNAct(3, c, 7, 2, act), nn.MaxPool2d(2, 2))
        stages = []
        for i, (n, w) in enumerate(zip(self.DEPTHS, self.WIDTHS)):
            stages.append(CSPResNeXtStage(c, s.c(w), s.n(n), act, i, s))
            c = 2 * s.c(w)
        self.stages = nn.ModuleList(stages)
        self._finish([2 * s.c(w) for w in self.WIDTHS])
