"""Class-aware batched greedy NMS in plain torch (the project does not depend on torchvision).

Written by hand because torchvision's compiled ``nms`` is the only well-kept implementation and
torchvision cannot be installed beside the CPU build of torch used here.
"""

from __future__ import annotations

import torch

from .boxes import bbox_iou, box_iou


def diou_overlap(box: torch.Tensor, others: torch.Tensor, beta: float = 0.6) -> torch.Tensor:
    """DIoU-NMS's overlap of one ``box`` (4,) with ``others`` (N, 4): IoU - (rho^2 / c^2) ** beta, the
    reference's ``beta_nms`` (yolov4.cfg: 0.6; beta = 1 is the DIoU paper's form)."""
    iou = box_iou(box[None], others)[0]
    distance = iou - bbox_iou(box.expand(len(others), 4), others, "diou")  # rho^2 / c^2
    return iou - distance.clamp(min=0) ** beta


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_thresh: float,
    max_keep: int | None = None,
    method: str = "iou",
    beta: float = 0.6,
) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score (at most ``max_keep``).

    Takes the best remaining box, drops every remaining box overlapping it by more than
    ``iou_thresh``, repeats: one iteration per kept box, so ``max_keep`` bounds the loop.
    ``method='diou'`` (DIoU-NMS, REFERENCE.md "NMS") measures overlap as IoU - (rho^2 / c^2) ** beta, so a
    box whose centre is far from the kept one survives an IoU that greedy NMS would suppress.
    """
    if method not in ("iou", "diou"):
        raise ValueError(f"NMS method {method!r}: choose iou (greedy) or diou")
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
        if method == "iou":
            overlap = box_iou(boxes[i : i + 1], boxes[rest])[0]
        else:
            overlap = diou_overlap(boxes[i], boxes[rest], beta)
        remaining = rest[overlap <= iou_thresh]
    return order[torch.stack(keep)]


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_thresh: float,
    max_keep: int | None = None,
    method: str = "iou",
    beta: float = 0.6,
) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other. Each class is moved to its
    own region by an offset of the coordinates' whole range (boxes are not clipped yet and may be
    negative: an offset of ``max + 1`` alone would let classes overlap)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    lo = boxes.min()
    offset = classes.to(boxes) * (boxes.max() - lo + 1)
    return nms(boxes - lo + offset[:, None], scores, iou_thresh, max_keep, method, beta)
