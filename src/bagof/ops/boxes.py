"""Box conversions and the IoU family (IoU, GIoU, DIoU, CIoU) on ``xyxy`` tensors.

Formulas follow REFERENCE.md ("Box loss"): GIoU (Rezatofighi 2019), DIoU / CIoU (Zheng 2020). The
CIoU trade-off ``alpha`` is detached, as in the DIoU authors' code.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-9


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU matrix between ``a`` (N, 4) and ``b`` (M, 4), xyxy."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter + EPS)


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """Pairwise shape IoU of boxes centred together: (N, 2) x (M, 2) -> (N, M)."""
    inter = torch.minimum(wh1[:, None], wh2[None]).prod(-1)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter + EPS)


def bbox_iou(pred: torch.Tensor, target: torch.Tensor, kind: str = "iou") -> torch.Tensor:
    """Element-wise IoU-family score of matched ``xyxy`` boxes (..., 4).

    ``kind`` is one of ``iou``, ``giou``, ``diou``, ``ciou``; the loss is ``1 - bbox_iou``.
    """
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    iw = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0)
    ih = (torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp(min=0)
    inter = iw * ih
    pw, ph = px2 - px1, py2 - py1
    tw, th = tx2 - tx1, ty2 - ty1
    union = pw * ph + tw * th - inter + EPS
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.maximum(px2, tx2) - torch.minimum(px1, tx1)  # enclosing box
    ch = torch.maximum(py2, ty2) - torch.minimum(py1, ty1)
    if kind == "giou":
        c_area = cw * ch + EPS
        return iou - (c_area - union) / c_area
    c2 = cw**2 + ch**2 + EPS
    rho2 = ((px1 + px2 - tx1 - tx2) ** 2 + (py1 + py2 - ty1 - ty2) ** 2) / 4
    if kind == "diou":
        return iou - rho2 / c2
    if kind == "ciou":
        v = (4 / math.pi**2) * (torch.atan(tw / (th + EPS)) - torch.atan(pw / (ph + EPS))) ** 2
        with torch.no_grad():
            alpha = v / ((1 - iou) + v + EPS)
        return iou - (rho2 / c2 + alpha * v)
    raise ValueError(f"unknown IoU kind {kind!r}: choose iou, giou, diou or ciou")


def make_grid(h: int, w: int, device=None) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack((xs, ys), -1).float()  # (h, w, 2) as (x, y)


def decode_boxes(t: torch.Tensor, anchors: torch.Tensor, stride: int, scale_x_y: torch.Tensor | float):
    """t (B, A, H, W, 4) raw YOLO outputs -> centre and size in pixels.

    ``b_xy = (grid + s * sigmoid(t_xy) - (s - 1) / 2) * stride``; ``b_wh = anchor * exp(t_wh)``.
    """
    h, w = t.shape[2:4]
    grid = make_grid(h, w, t.device)
    xy = (grid + scale_x_y * t[..., :2].sigmoid() - (scale_x_y - 1) / 2) * stride
    wh = anchors.view(1, -1, 1, 1, 2) * t[..., 2:4].clamp(max=10).exp()  # clamp: exp overflow guard
    return xy, wh
