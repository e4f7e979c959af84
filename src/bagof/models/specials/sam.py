"""SAM, spatial attention (REFERENCE.md "SAM"; paper Fig. 5).

``point`` (YOLOv4's modified SAM): a 1x1 conv + BN + sigmoid gives one weight per position *and*
channel, multiplied into the input (Darknet: ``[convolutional] activation=logistic`` then ``[sam]``).
``cbam`` (the original CBAM spatial attention): channel-wise average and max pooling -> 7x7 conv ->
sigmoid, one weight per position shared by all channels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.conv import ConvBNAct
from .registry import PerLevel, register_special


class SAM(nn.Module):
    def __init__(self, channels: int, kind: str = "point"):
        super().__init__()
        if kind not in ("point", "cbam"):
            raise ValueError(f"SAM kind {kind!r}: choose 'point' (YOLOv4) or 'cbam' (original)")
        self.kind = kind
        if kind == "point":
            self.gate = ConvBNAct(channels, channels, 1, act="logistic")
        else:
            self.gate = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "point":
            return x * self.gate(x)
        return x * self.gate(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1))


@register_special("sam", rank=30)
def sam(channels, act, kind: str = "point"):
    """Table 5 "SAM": a spatial attention on each neck output (``point``: YOLOv4's; ``cbam``: the original)."""
    return PerLevel(SAM(c, kind) for c in channels)
