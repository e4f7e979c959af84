"""BiFPN neck (Tan et al. 2020; REFERENCE.md "BiFPN") in place of FPN/PAN, one bidirectional layer.

Top-down then bottom-up like PAN, but every node *adds* its inputs with fast normalised fusion
weights (``layers.fusion.WeightedSum``) instead of concatenating them, and the bottom-up nodes of the
middle level also take that level's original input (BiFPN's extra same-level edge). Inputs are
matched in width by 1x1 convs (up-sampling) or 3x3/2 convs (down-sampling); every node ends in a 3x3
conv. The stride-32 input goes through the same SPP block as PAN's.
"""

from __future__ import annotations

from torch import nn

from ..layers import ConvBNAct
from ..layers.fusion import WeightedSum
from .yolo_neck import TopBlock


def _up(c_from: int, c_to: int, act: str) -> nn.Module:
    return nn.Sequential(ConvBNAct(c_from, c_to, 1, act=act), nn.Upsample(scale_factor=2, mode="nearest"))


class BiFPNNeck(nn.Module):
    def __init__(self, in_channels, channels, spp: bool = True, act: str = "leaky"):
        super().__init__()
        c3, c4, c5 = channels
        b3, b4, b5 = in_channels
        self.top = TopBlock(b5, c5, act, spp)
        self.lateral4 = ConvBNAct(b4, c4, 1, act=act)
        self.lateral3 = ConvBNAct(b3, c3, 1, act=act)
        self.up5, self.up4 = _up(c5, c4, act), _up(c4, c3, act)
        self.down3, self.down4 = ConvBNAct(c3, c4, 3, 2, act), ConvBNAct(c4, c5, 3, 2, act)
        self.fuse_td4, self.fuse_out3 = WeightedSum(2), WeightedSum(2)
        self.fuse_out4, self.fuse_out5 = WeightedSum(3), WeightedSum(2)
        self.conv_td4, self.conv_out3 = ConvBNAct(c4, c4, 3, act=act), ConvBNAct(c3, c3, 3, act=act)
        self.conv_out4, self.conv_out5 = ConvBNAct(c4, c4, 3, act=act), ConvBNAct(c5, c5, 3, act=act)
        self.out_channels = (c3, c4, c5)

    def forward(self, feats):
        x3, x4, x5 = feats
        p5, p4, p3 = self.top(x5), self.lateral4(x4), self.lateral3(x3)
        td4 = self.conv_td4(self.fuse_td4([p4, self.up5(p5)]))
        out3 = self.conv_out3(self.fuse_out3([p3, self.up4(td4)]))
        out4 = self.conv_out4(self.fuse_out4([p4, td4, self.down3(out3)]))
        out5 = self.conv_out5(self.fuse_out5([p5, self.down4(out4)]))
        return [out3, out4, out5]

    def fusions(self):
        return [self.fuse_td4, self.fuse_out3, self.fuse_out4, self.fuse_out5]
