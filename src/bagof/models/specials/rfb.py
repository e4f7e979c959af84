"""RFB, receptive field block (Liu et al. 2018; REFERENCE.md "RFB").

Three parallel branches 1x1 -> kxk -> 3x3 dilated (k = 1, 3, 5 with dilation 1, 3, 5), each a quarter
of the output width, concatenated, fused by a linear 1x1, added to a (1x1-projected if needed)
shortcut, then the activation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.activations import create_act
from ..layers.conv import ConvBNAct
from .registry import PerLevel, register_special


class RFB(nn.Module):
    def __init__(self, c_in: int, c_out: int, act: str = "leaky"):
        super().__init__()
        c = max(8, c_out // 4)
        self.branches = nn.ModuleList(
            nn.Sequential(
                ConvBNAct(c_in, c, 1, act=act),
                *([ConvBNAct(c, c, k, act=act)] if k > 1 else []),
                ConvBNAct(c, c, 3, act="linear", dilation=d),
            )
            for k, d in ((1, 1), (3, 3), (5, 5))
        )
        self.fuse = ConvBNAct(3 * c, c_out, 1, act="linear")
        self.shortcut = nn.Identity() if c_in == c_out else ConvBNAct(c_in, c_out, 1, act="linear")
        self.act = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse(torch.cat([b(x) for b in self.branches], 1))
        return self.act(y + self.shortcut(x))


@register_special("rfb", rank=20)
def rfb(channels, act):
    """Table 5 "RFB": an RFB on each neck output."""
    return PerLevel(RFB(c, c, act) for c in channels)
