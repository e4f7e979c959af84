"""The YOLO detector: backbone -> neck -> head, plus decoding of raw maps into boxes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ops.boxes import decode_boxes
from .backbones import BACKBONES
from .heads import YoloHead
from .layers import make_divisible
from .necks import build_neck
from .specials import build_specials
from .transfer import load_backbone
from .weights import load_weights

STRIDES = (8, 16, 32)


class YoloDetector(nn.Module):
    """``anchors``: 9 (w, h) pairs in input pixels, 3 per stride 8/16/32, smallest first.

    Anchors are given for an input of ``anchors_size`` pixels (416 for YOLOv3's, 512 for the paper's
    optimized set) and rescaled to ``img_size``, so a reduced-resolution run keeps their relative size.
    ``scale_x_y``: grid-sensitivity factor per stride (1.0 = YOLOv3; REFERENCE.md "S").
    ``specials``: the Bag-of-Specials modules between the neck and the heads, ``{name: options}``, built
    by the registry in ``models/specials/`` (asff, rfb, sam, dropblock, ...; applied in their placement
    order). ``neck``: ``fpn``, ``pan`` or ``bifpn``.
    ``gaussian``: Gaussian YOLO head (4 uncertainties per box; the score is multiplied by 1 - their mean).
    ``csp``: False builds the backbone without Cross-Stage-Partial connections; ``miwrc`` makes the
    backbone's residual sums learned fast-normalised weighted sums.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        anchors: Sequence[Sequence[float]],
        width: float = 1.0,
        depth: float = 1.0,
        backbone_act: str = "mish",
        neck_act: str = "leaky",
        neck: str = "pan",
        spp: bool = True,
        neck_channels: Sequence[int] = (128, 256, 512),
        scale_x_y: Sequence[float] = (1.0, 1.0, 1.0),
        img_size: int | None = None,
        anchors_size: int | None = None,
        specials: dict | None = None,
        gaussian: bool = False,
        csp: bool = True,
        miwrc: bool = False,
        backbone_weights: str | None = None,
        weights: str | None = None,
        darknet_cfg: str | None = None,
        backbone_darknet_cfg: str | None = None,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone={backbone!r}: choose one of {sorted(BACKBONES)}")
        anchors = torch.tensor(anchors, dtype=torch.float32).view(-1, 2)
        if img_size and anchors_size:
            anchors = anchors * (img_size / anchors_size)
        if anchors.shape[0] % len(STRIDES):
            raise ValueError(f"model.anchors has {anchors.shape[0]} pairs; need a multiple of {len(STRIDES)}")
        self.num_classes = num_classes
        extra = {k: v for k, v in (("csp", csp), ("miwrc", miwrc)) if v != (k == "csp")}  # only non-defaults
        try:
            self.backbone = BACKBONES[backbone](width=width, depth=depth, act=backbone_act, **extra)
        except TypeError:
            raise ValueError(f"model.backbone={backbone} has no option {sorted(extra)}") from None
        if backbone_weights:  # Table 6: start from a trained classifier's backbone (models/transfer.py)
            load_backbone(self.backbone, backbone_weights, backbone_darknet_cfg)
        chans = [c if width == 1.0 else make_divisible(c * width) for c in neck_channels]
        self.neck = build_neck(self.backbone.out_channels, chans, kind=neck, spp=spp, act=neck_act)
        c_out = self.neck.out_channels
        self.specials = build_specials(specials, c_out, neck_act)
        self.gaussian = gaussian
        self.head = YoloHead(c_out, num_classes, anchors.shape[0] // len(STRIDES), neck_act, gaussian=gaussian)
        self.register_buffer("anchors", anchors.view(len(STRIDES), -1, 2), persistent=False)
        self.register_buffer("scale_x_y", torch.tensor(list(scale_x_y), dtype=torch.float32), persistent=False)
        self.strides = STRIDES
        if weights:  # the whole detector from saved weights (models/weights.py), after every module exists
            load_weights(self, weights, darknet_cfg)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.specials(self.neck(self.backbone(x))))

    def decode(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> (B, N, 5 + C): cx, cy, w, h in input pixels, objectness and class probabilities."""
        decoded = []
        for i, p in enumerate(outputs):
            b, na, h, w, _ = p.shape
            xy, wh = decode_boxes(p[..., :4], self.anchors[i], self.strides[i], self.scale_x_y[i])
            scores = p[..., 4 : 5 + self.num_classes].sigmoid()
            if self.gaussian:  # uncertainty-aware score: objectness x (1 - mean sigma of x, y, w, h)
                sigma = p[..., 5 + self.num_classes :].sigmoid().mean(-1, keepdim=True)
                scores = torch.cat([scores[..., :1] * (1 - sigma), scores[..., 1:]], -1)
            decoded.append(torch.cat([xy, wh, scores], -1).view(b, -1, 5 + self.num_classes))
        return torch.cat(decoded, 1)


__all__ = ["STRIDES", "YoloDetector", "decode_boxes"]
