"""YOLOv3 head (REFERENCE.md "Heads"): per scale a 3x3 conv (2x the neck width) then a linear 1x1 conv
with bias to ``anchors_per_scale * (5 + num_classes)`` channels. ``gaussian=True`` (Gaussian YOLO, Table 5
"G") appends 4 channels per anchor: the uncertainty of x, y, w, h (sigmoid -> sigma in (0, 1))."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import ConvBNAct


class YoloHead(nn.Module):
    def __init__(
        self,
        in_channels,
        num_classes: int,
        anchors_per_scale: int = 3,
        act: str = "leaky",
        obj_prior: float = 0.01,
        gaussian: bool = False,
    ):
        super().__init__()
        self.na, self.nc = anchors_per_scale, num_classes
        self.extra = 4 if gaussian else 0
        self.no = 5 + num_classes + self.extra
        self.convs = nn.ModuleList(ConvBNAct(c, 2 * c, 3, act=act) for c in in_channels)
        self.preds = nn.ModuleList(nn.Conv2d(2 * c, self.na * self.no, 1) for c in in_channels)
        # Objectness bias starts at a small prior so the thousands of negative cells do not swamp the
        # first iterations (Focal-loss / YOLOv5 initialisation; Darknet starts at zero and relies on burn-in).
        for conv in self.preds:
            b = conv.bias.view(self.na, self.no)
            with torch.no_grad():
                b[:, 4] = -math.log((1 - obj_prior) / obj_prior)
                b[:, 5 : 5 + num_classes] = -math.log(max(num_classes - 1, 1))

    def forward(self, feats):
        """Returns raw maps, each (B, anchors, H, W, 5 + classes [+ 4 uncertainties])."""
        outs = []
        for x, conv, pred in zip(feats, self.convs, self.preds):
            # the raw maps are box offsets and logits in float32 even under bf16/fp16 autocast: the loss and
            # the decoding read sub-pixel offsets and exp(tw) from them (bf16 keeps ~3 significant digits)
            x = conv(x)
            with torch.autocast(x.device.type, enabled=False):
                y = pred(x.to(pred.weight.dtype))  # float32 (float64 where the model is)
            b, _, h, w = y.shape
            outs.append(y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return outs
