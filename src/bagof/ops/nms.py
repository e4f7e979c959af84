"""Class-aware batched greedy NMS in plain torch (the project does not depend on torchvision).

Written by hand because torchvision's compiled ``nms`` is the only well-kept implementation and
torchvision cannot be installed beside the CPU build of torch used here.
"""
from __future__ import annotations

import torch

from .boxes import box_iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score."""
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    iou = box_iou(boxes[order], boxes[order])
    n = order.numel()
    # Suppression matrix: box j is suppressed by an earlier-ranked kept box i with IoU > thresh.
    over = (iou > iou_thresh).triu(diagonal=1)
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for i in range(n):
        if keep[i]:
            keep &= ~over[i]
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other (coordinate offset trick)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offset[:, None], scores, iou_thresh)
