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
from ..layers.fusion import WeightedSum
from .common import Backbone, Scaler, shortcut_add


def _groups(channels: int, cardinality: int = 32) -> int:
    return math.gcd(channels, cardinality)


class ResNeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 linear (to ``c_out``, default ``c``), shortcut, activation; ``miwrc``:
    the shortcut sum is a learned fast-normalised weighted sum."""

    def __init__(self, c_in: int, c: int, act: str, miwrc: bool = False, c_out: int | None = None):
        super().__init__()
        self.cv1 = ConvBNAct(c_in, c, 1, act=act)
        self.cv2 = ConvBNAct(c, c, 3, act=act, groups=_groups(c))
        self.cv3 = ConvBNAct(c, c_out or c, 1, act="linear")
        self.act = create_act(act)  # darknet applies the activation after the shortcut add
        self.fuse = WeightedSum(2) if miwrc else None

    def forward(self, x):
        return self.act(shortcut_add(self.cv3(self.cv2(self.cv1(x))), x, self.fuse))


class CSPResNeXtStage(nn.Module):
    def __init__(self, c_in: int, c: int, n: int, act: str, stage: int, s: Scaler, miwrc: bool = False):
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
        blocks = [ResNeXtBlock(c_blocks_in if i == 0 else c, c, act, miwrc) for i in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.transition = ConvBNAct(c, c, 1, act=act)
        self.fuse = ConvBNAct(2 * c, 2 * c, 1, act=act)

    def forward(self, x):
        x = self.down(x)
        return self.fuse(torch.cat([self.transition(self.blocks(self.part2(x))), self.part1(x)], 1))


def resnext_stage(c_in: int, c: int, n: int, act: str, stage: int, miwrc: bool = False) -> nn.Sequential:
    """A plain ResNeXt stage (no CSP), same output width 2c: down-sampling (stages 2-4: grouped 3x3/2;
    stage 1: a 1x1 to the width), then ``n`` bottlenecks 2c -> c (grouped 3x3) -> 2c."""
    down = ConvBNAct(c_in, 2 * c, 1, act=act) if stage == 0 else ConvBNAct(c_in, 2 * c, 3, 2, act, groups=_groups(c_in))
    return nn.Sequential(down, *(ResNeXtBlock(2 * c, c, act, miwrc, c_out=2 * c) for _ in range(n)))


class CSPResNeXt50(Backbone):
    """``csp=False``: ResNeXt50 without Cross-Stage-Partial connections (3, 4, 6, 3 bottlenecks),
    same stage output widths."""

    DEPTHS = (3, 3, 5, 2)
    PLAIN_DEPTHS = (3, 4, 6, 3)  # ResNeXt50's, for csp=False
    WIDTHS = (128, 256, 512, 1024)  # block width; each stage outputs twice this

    def __init__(
        self, width: float = 1.0, depth: float = 1.0, act: str = "leaky", csp: bool = True, miwrc: bool = False
    ):
        super().__init__()
        s = Scaler(width, depth)
        c = s.c(64)
        self.stem = nn.Sequential(ConvBNAct(3, c, 7, 2, act), nn.MaxPool2d(2, 2))
        stages = []
        for i, (n, n_plain, w) in enumerate(zip(self.DEPTHS, self.PLAIN_DEPTHS, self.WIDTHS)):
            if csp:
                stages.append(CSPResNeXtStage(c, s.c(w), s.n(n), act, i, s, miwrc))
            else:
                stages.append(resnext_stage(c, s.c(w), s.n(n_plain), act, i, miwrc))
            c = 2 * s.c(w)
        self.stages = nn.ModuleList(stages)
        self._finish([2 * s.c(w) for w in self.WIDTHS])
