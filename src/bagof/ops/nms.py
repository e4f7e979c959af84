"""Class-aware batched greedy NMS in plain torch (the project does not depend on torchvision).

Written by hand because torchvision's compiled ``nms`` is the only well-kept implementation and
torchvision cannot be installed beside the CPU build of torch used here.
"""
from __future__ import annotations

import torch

from .boxes import box_iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float, max_keep: int | None = None) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score (at most ``max_keep``).

    Takes the best remaining box, drops every remaining box overlapping it by more than
    ``iou_thresh``, repeats: one iteration per kept box, so ``max_keep`` bounds the loop.
    """
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    boxes = boxes[order]
    remaining = torch.arange(order.numel(), device=boxes.device)
    keep = []
    # IoU row by row for kept boxes only: at most max_keep rows instead of the full n x n matrix
    while remaining.numel() and (max_keep is None or len(keep) < max_keep):
        i, rest = remaining[0], remaining[1:]
        keep.append(i)
        remaining = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou_thresh]
    return order[torch.stack(keep)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thresh: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other (coordinate offset trick)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offset[:, None], scores, iou_thresh, max_keep)
