"""CSPDarknet53, the YOLOv4 backbone (REFERENCE.md "CSPDarknet53"; darknet-cfg ``yolov4.cfg``)."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct
from ..layers.fusion import WeightedSum
from .common import Backbone, Scaler


class DarkResidual(nn.Module):
    """1x1 -> 3x3 with identity shortcut (linear activation after the add, as in the cfg); ``miwrc``:
    the sum is a learned fast-normalised weighted sum (MiWRC)."""

    def __init__(self, c: int, c_hidden: int, act: str, miwrc: bool = False):
        super().__init__()
        self.cv1 = ConvBNAct(c, c_hidden, 1, act=act)
        self.cv2 = ConvBNAct(c_hidden, c, 3, act=act)
        self.fuse = WeightedSum(2) if miwrc else None

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.fuse is None else self.fuse([x, y])


class CSPStage(nn.Module):
    """3x3/2 down -> [1x1 part 1] || [1x1 part 2 -> residual blocks -> 1x1 transition] -> concat -> 1x1.

    Stage 1 of CSPDarknet53 keeps full width in both parts and its block bottleneck is half width
    (``first=True``); stages 2-5 split into C/2 + C/2 with C/2 -> C/2 blocks.
    """

    def __init__(self, c_in: int, c_out: int, n: int, act: str, first: bool = False, miwrc: bool = False):
        super().__init__()
        c_part = c_out if first else c_out // 2
        c_hidden = c_out // 2 if first else c_part
        self.down = ConvBNAct(c_in, c_out, 3, 2, act)
        self.part1 = ConvBNAct(c_out, c_part, 1, act=act)
        self.part2 = ConvBNAct(c_out, c_part, 1, act=act)
        self.blocks = nn.Sequential(*(DarkResidual(c_part, c_hidden, act, miwrc) for _ in range(n)))
        self.transition = ConvBNAct(c_part, c_part, 1, act=act)
        self.fuse = ConvBNAct(2 * c_part, c_out, 1, act=act)

    def forward(self, x):
        x = self.down(x)
        return self.fuse(torch.cat([self.transition(self.blocks(self.part2(x))), self.part1(x)], 1))


def dark_stage(c_in: int, c_out: int, n: int, act: str, miwrc: bool = False) -> nn.Sequential:
    """A Darknet53 stage (no CSP): 3x3/2 down, then ``n`` residual blocks at full width."""
    return nn.Sequential(
        ConvBNAct(c_in, c_out, 3, 2, act), *(DarkResidual(c_out, c_out // 2, act, miwrc) for _ in range(n))
    )


class CSPDarknet53(Backbone):
    """``csp=False``: the same stages without Cross-Stage-Partial connections (Darknet53's, with ``act``)."""

    DEPTHS = (1, 2, 8, 8, 4)
    WIDTHS = (64, 128, 256, 512, 1024)

    def __init__(
        self, width: float = 1.0, depth: float = 1.0, act: str = "mish", csp: bool = True, miwrc: bool = False
    ):
        super().__init__()
        s = Scaler(width, depth)
        c = s.c(32)
        self.stem = ConvBNAct(3, c, 3, 1, act)
        stages = []
        for i, (n, w) in enumerate(zip(self.DEPTHS, self.WIDTHS)):
            if csp:
                stages.append(CSPStage(c, s.c(w), s.n(n), act, first=i == 0, miwrc=miwrc))
            else:
                stages.append(dark_stage(c, s.c(w), s.n(n), act, miwrc))
            c = s.c(w)
        self.stages = nn.ModuleList(stages)
        self._finish([s.c(w) for w in self.WIDTHS])
