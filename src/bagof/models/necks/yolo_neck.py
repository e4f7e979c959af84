"""YOLO necks: the YOLOv3 FPN (top-down) and the YOLOv4 modified PANet (top-down + bottom-up, concat).

Layer by layer as in darknet-cfg ``yolov3(-spp).cfg`` (``fpn``) and ``yolov4.cfg`` /
``csresnext50-panet-spp.cfg`` (``pan``), REFERENCE.md "SPP", "PANet", "FPN".
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import SPP, ConvBNAct


def five_convs(c_in: int, c: int, act: str) -> nn.Sequential:
    """1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c."""
    return nn.Sequential(
        ConvBNAct(c_in, c, 1, act=act),
        ConvBNAct(c, 2 * c, 3, act=act),
        ConvBNAct(2 * c, c, 1, act=act),
        ConvBNAct(c, 2 * c, 3, act=act),
        ConvBNAct(2 * c, c, 1, act=act),
    )


class TopBlock(nn.Module):
    """The stride-32 block: five convs, or with SPP 1x1/3x3/1x1 -> SPP -> 1x1/3x3/1x1."""

    def __init__(self, c_in: int, c: int, act: str, spp: bool):
        super().__init__()
        if spp:
            self.body = nn.Sequential(
                ConvBNAct(c_in, c, 1, act=act),
                ConvBNAct(c, 2 * c, 3, act=act),
                ConvBNAct(2 * c, c, 1, act=act),
                SPP(),
                ConvBNAct(4 * c, c, 1, act=act),
                ConvBNAct(c, 2 * c, 3, act=act),
                ConvBNAct(2 * c, c, 1, act=act),
            )
        else:
            self.body = five_convs(c_in, c, act)

    def forward(self, x):
        return self.body(x)


class YoloNeck(nn.Module):
    """Takes backbone maps (strides 8, 16, 32); returns neck maps with channels ``out_channels``.

    ``kind='fpn'``: YOLOv3, raw backbone laterals, concat [upsampled, lateral].
    ``kind='pan'``: YOLOv4, 1x1-reduced laterals, concat [lateral, upsampled], then a bottom-up path
    (3x3/2 conv, concat [down, top-down map], five convs).
    """

    def __init__(self, in_channels, channels, kind: str = "pan", spp: bool = True, act: str = "leaky"):
        super().__init__()
        if kind not in ("fpn", "pan"):
            raise ValueError(f"model.neck.kind={kind!r}: choose 'fpn' (YOLOv3) or 'pan' (YOLOv4)")
        self.kind = kind
        c3, c4, c5 = channels  # e.g. 128, 256, 512 at paper scale
        b3, b4, b5 = in_channels
        self.top = TopBlock(b5, c5, act, spp)
        self.reduce5 = ConvBNAct(c5, c4, 1, act=act)
        self.reduce4 = ConvBNAct(c4, c3, 1, act=act)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        if kind == "pan":
            self.lateral4 = ConvBNAct(b4, c4, 1, act=act)
            self.lateral3 = ConvBNAct(b3, c3, 1, act=act)
            self.td4 = five_convs(2 * c4, c4, act)
            self.td3 = five_convs(2 * c3, c3, act)
            self.down3 = ConvBNAct(c3, c4, 3, 2, act)
            self.bu4 = five_convs(2 * c4, c4, act)
            self.down4 = ConvBNAct(c4, c5, 3, 2, act)
            self.bu5 = five_convs(2 * c5, c5, act)
        else:
            self.td4 = five_convs(c4 + b4, c4, act)
            self.td3 = five_convs(c3 + b3, c3, act)
        self.out_channels = (c3, c4, c5)

    def forward(self, feats):
        x3, x4, x5 = feats
        p5 = self.top(x5)
        if self.kind == "fpn":
            p4 = self.td4(torch.cat([self.up(self.reduce5(p5)), x4], 1))
            p3 = self.td3(torch.cat([self.up(self.reduce4(p4)), x3], 1))
            return [p3, p4, p5]
        t4 = self.td4(torch.cat([self.lateral4(x4), self.up(self.reduce5(p5))], 1))
        p3 = self.td3(torch.cat([self.lateral3(x3), self.up(self.reduce4(t4))], 1))
        p4 = self.bu4(torch.cat([self.down3(p3), t4], 1))
        p5 = self.bu5(torch.cat([self.down4(p4), p5], 1))
        return [p3, p4, p5]
