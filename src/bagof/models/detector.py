"""The YOLO detector: backbone -> neck -> head, plus decoding of raw maps into boxes."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .backbones import BACKBONES
from .heads import YoloHead
from .layers import make_divisible
from .layers.dropblock import DropBlock2d
from .necks import YoloNeck

STRIDES = (8, 16, 32)


class YoloDetector(nn.Module):
    """``anchors``: 9 (w, h) pairs in input pixels, 3 per stride 8/16/32, smallest first.

    Anchors are given for an input of ``anchors_size`` pixels (416 for YOLOv3's, 512 for the paper's
    optimized set) and rescaled to ``img_size``, so a reduced-resolution run keeps their relative size.
    ``scale_x_y``: grid-sensitivity factor per stride (1.0 = YOLOv3; REFERENCE.md "S").
    ``dropblock``: ``{drop_prob, block_size}`` puts DropBlock on each neck output, before the heads.
    """

    def __init__(self, backbone: str, num_classes: int, anchors: Sequence[Sequence[float]], width: float = 1.0,
                 depth: float = 1.0, backbone_act: str = "mish", neck_act: str = "leaky", neck: str = "pan",
                 spp: bool = True, neck_channels: Sequence[int] = (128, 256, 512),
                 scale_x_y: Sequence[float] = (1.0, 1.0, 1.0), img_size: int | None = None,
                 anchors_size: int | None = None, dropblock: dict | None = None):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone={backbone!r}: choose one of {sorted(BACKBONES)}")
        anchors = torch.tensor(anchors, dtype=torch.float32).view(-1, 2)
        if img_size and anchors_size:
            anchors = anchors * (img_size / anchors_size)
        if anchors.shape[0] % len(STRIDES):
            raise ValueError(f"model.anchors has {anchors.shape[0]} pairs; need a multiple of {len(STRIDES)}")
        self.num_classes = num_classes
        self.backbone = BACKBONES[backbone](width=width, depth=depth, act=backbone_act)
        chans = [c if width == 1.0 else make_divisible(c * width) for c in neck_channels]
        self.neck = YoloNeck(self.backbone.out_channels, chans, kind=neck, spp=spp, act=neck_act)
        self.dropblock = nn.ModuleList(DropBlock2d(**dropblock) for _ in STRIDES) if dropblock else None
        self.head = YoloHead(self.neck.out_channels, num_classes, anchors.shape[0] // len(STRIDES), neck_act)
        self.register_buffer("anchors", anchors.view(len(STRIDES), -1, 2), persistent=False)
        self.register_buffer("scale_x_y", torch.tensor(list(scale_x_y), dtype=torch.float32), persistent=False)
        self.strides = STRIDES

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.neck(self.backbone(x))
        if self.dropblock is not None:
            feats = [drop(f) for drop, f in zip(self.dropblock, feats)]
        return self.head(feats)

    def decode(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> (B, N, 5 + C): cx, cy, w, h in input pixels, objectness and class probabilities."""
        decoded = []
        for i, p in enumerate(outputs):
            b, na, h, w, _ = p.shape
            xy, wh = decode_boxes(p[..., :4], self.anchors[i], self.strides[i], self.scale_x_y[i])
            scores = p[..., 4:].sigmoid()
            decoded.append(torch.cat([xy, wh, scores], -1).view(b, -1, p.shape[-1]))
        return torch.cat(decoded, 1)


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
