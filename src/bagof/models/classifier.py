"""A backbone with the Darknet classifier head (global average pool -> linear 1x1 conv with bias): the
classification task's model (``conf/model/classifier.yaml``), whose backbone a detector can start from."""

from __future__ import annotations

from torch import nn

from .backbones import BACKBONES
from .weights import load_weights


class Classifier(nn.Module):
    def __init__(
        self,
        backbone: str,
        num_classes: int = 1000,
        width: float = 1.0,
        depth: float = 1.0,
        backbone_act: str = "mish",
        weights: str | None = None,
        darknet_cfg: str | None = None,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone={backbone!r}: choose one of {sorted(BACKBONES)}")
        self.backbone = BACKBONES[backbone](width=width, depth=depth, act=backbone_act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(self.backbone.num_features, num_classes, 1)
        if weights:  # saved weights (models/weights.py): a .ckpt, or Darknet's .weights of csdarknet53-omega.cfg
            load_weights(self, weights, darknet_cfg)

    def forward(self, x):
        return self.fc(self.pool(self.backbone(x)[-1])).flatten(1)
