"""A backbone with the Darknet classifier head (global average pool -> linear 1x1 conv with bias)."""
from __future__ import annotations

from torch import nn

from .backbones import BACKBONES


class Classifier(nn.Module):
    def __init__(self, backbone: str, num_classes: int = 1000, width: float = 1.0, depth: float = 1.0, act: str = "mish"):
        super().__init__()
        self.backbone = BACKBONES[backbone](width=width, depth=depth, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(self.backbone.num_features, num_classes, 1)

    def forward(self, x):
        return self.fc(self.pool(self.backbone(x)[-1])).flatten(1)
