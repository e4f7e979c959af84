"""The YOLO detector: backbone -> neck -> head, plus decoding of raw maps into boxes."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .backbones import BACKBONES
from .transfer import load_backbone
from .heads import YoloHead
from .layers import make_divisible
from .layers.attention import SAM
from .layers.dropblock import DropBlock2d
from .layers.rfb import RFB
from .necks import ASFF, build_neck

STRIDES = (8, 16, 32)


class YoloDetector(nn.Module):
    """``anchors``: 9 (w, h) pairs in input pixels, 3 per stride 8/16/32, smallest first.

    Anchors are given for an input of ``anchors_size`` pixels (416 for YOLOv3's, 512 for the paper's
    optimized set) and rescaled to ``img_size``, so a reduced-resolution run keeps their relative size.
    ``scale_x_y``: grid-sensitivity factor per stride (1.0 = YOLOv3; REFERENCE.md "S").
    Bag of Specials, between the neck and the heads, in this order (our placement: no reference cfg
    of these variants ships with the paper): ``fusion='asff'`` fuses the three levels; ``rfb`` adds an
    RFB per level; ``sam`` (``point`` or ``cbam``) a spatial attention per level; ``dropblock``
    (``{drop_prob, block_size}``) a DropBlock per level. ``neck``: ``fpn``, ``pan`` or ``bifpn``.
    ``gaussian``: Gaussian YOLO head (4 uncertainties per box; the score is multiplied by 1 - their mean).
    ``csp``: False builds the backbone without Cross-Stage-Partial connections; ``miwrc`` makes the
    backbone's residual sums learned fast-normalised weighted sums.
    """

    def __init__(self, backbone: str, num_classes: int, anchors: Sequence[Sequence[float]], width: float = 1.0,
                 depth: float = 1.0, backbone_act: str = "mish", neck_act: str = "leaky", neck: str = "pan",
                 spp: bool = True, neck_channels: Sequence[int] = (128, 256, 512),
                 scale_x_y: Sequence[float] = (1.0, 1.0, 1.0), img_size: int | None = None,
                 anchors_size: int | None = None, dropblock: dict | None = None, fusion: str | None = None,
                 rfb: bool = False, sam: str | None = None, gaussian: bool = False, csp: bool = True,
                 miwrc: bool = False, backbone_weights: str | None = None):
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
            load_backbone(self.backbone, backbone_weights)
        chans = [c if width == 1.0 else make_divisible(c * width) for c in neck_channels]
        self.neck = build_neck(self.backbone.out_channels, chans, kind=neck, spp=spp, act=neck_act)
        c_out = self.neck.out_channels
        if fusion not in (None, "asff"):
            raise ValueError(f"model.fusion={fusion!r}: choose null or asff")
        per_level = []
        if fusion == "asff":
            per_level.append(ASFF(c_out, neck_act))
        if rfb:
            per_level.append(_PerLevel(RFB(c, c, neck_act) for c in c_out))
        if sam:
            per_level.append(_PerLevel(SAM(c, sam) for c in c_out))
        if dropblock:
            per_level.append(_PerLevel(DropBlock2d(**dropblock) for _ in c_out))
        self.specials = nn.Sequential(*per_level)
        self.gaussian = gaussian
        self.head = YoloHead(c_out, num_classes, anchors.shape[0] // len(STRIDES), neck_act, gaussian=gaussian)
        self.register_buffer("anchors", anchors.view(len(STRIDES), -1, 2), persistent=False)
        self.register_buffer("scale_x_y", torch.tensor(list(scale_x_y), dtype=torch.float32), persistent=False)
        self.strides = STRIDES

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


class _PerLevel(nn.ModuleList):
    """One module per pyramid level, applied level by level."""

    def forward(self, feats):
        return [m(f) for m, f in zip(self, feats)]


def make_grid(h: int, w: int, device=None) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack((xs, ys), -1).float()  # (h, w, 2) as (x, y)


def decode_boxes(t: torch.Tensor, anchors: torch.Tensor, stride: int, scale_x_y: torch.Tensor | float):
    """t (B, A, H, W, 4) raw -> centre and size in pixels.

    ``b_xy = (grid + s * sigmoid(t_xy) - (s - 1) / 2) * stride``; ``b_wh = anchor * exp(t_wh)``.
    """
    h, w = t.shape[2:4]
    grid = make_grid(h, w, t.device)
    xy = (grid + scale_x_y * t[..., :2].sigmoid() - (scale_x_y - 1) / 2) * stride
    wh = anchors.view(1, -1, 1, 1, 2) * t[..., 2:4].clamp(max=10).exp()  # clamp: exp overflow guard
    return xy, wh
