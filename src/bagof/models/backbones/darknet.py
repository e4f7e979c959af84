"""Darknet53, the YOLOv3 backbone (darknet-cfg ``yolov3.cfg``): 3x3/2 down then residual blocks."""

from __future__ import annotations

from torch import nn

from ..layers import ConvBNAct
from .common import Backbone, Scaler
from .cspdarknet import dark_stage


class Darknet53(Backbone):
    DEPTHS = (1, 2, 8, 8, 4)
    WIDTHS = (64, 128, 256, 512, 1024)

    def __init__(self, width: float = 1.0, depth: float = 1.0, act: str = "leaky", miwrc: bool = False):
        super().__init__()
        s = Scaler(width, depth)
        c = s.c(32)
        self.stem = ConvBNAct(3, c, 3, 1, act)
        stages = []
        for n, w in zip(self.DEPTHS, self.WIDTHS):
            cw = s.c(w)
            stages.append(dark_stage(c, cw, s.n(n), act, miwrc))
            c = cw
        self.stages = nn.ModuleList(stages)
        self._finish([s.c(w) for w in self.WIDTHS])
