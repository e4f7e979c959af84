"""Decoded predictions -> per-image detections (score threshold, class-aware NMS, top-k)."""

from __future__ import annotations

import torch

from .boxes import cxcywh_to_xyxy
from .nms import batched_nms


def postprocess(
    decoded: torch.Tensor,
    conf_thresh: float = 0.001,
    iou_thresh: float = 0.45,
    max_det: int = 300,
    max_candidates: int = 3000,
    nms: str = "iou",
    beta_nms: float = 0.6,
) -> list[torch.Tensor]:
    """``decoded`` (B, N, 5 + C) from ``YoloDetector.decode`` -> list of (K, 6) [x1, y1, x2, y2, score, class].

    Score = objectness x class probability; every class above ``conf_thresh`` is a candidate (as in
    Darknet, which reports all classes over the threshold), so one box may yield several classes.
    ``nms``: ``iou`` (greedy) or ``diou`` (DIoU-NMS, with the reference's ``beta_nms``: yolov4.cfg 0.6).
    """
    out = []
    for det in decoded:
        scores = det[:, 4:5] * det[:, 5:]
        idx, cls = (scores > conf_thresh).nonzero(as_tuple=True)
        s = scores[idx, cls]
        if s.numel() > max_candidates:
            s, top = s.topk(max_candidates)
            idx, cls = idx[top], cls[top]
        boxes = cxcywh_to_xyxy(det[idx, :4])
        keep = batched_nms(boxes, s, cls, iou_thresh, max_det, nms, beta_nms)
        out.append(torch.cat([boxes[keep], s[keep, None], cls[keep, None].float()], 1))
    return out


def detect(model, imgs: torch.Tensor, metas, post: dict) -> list[torch.Tensor]:
    """A detector on letterboxed ``imgs`` -> per image (K, 6) [x1, y1, x2, y2, score, class] in the original
    image's pixels (``metas``: width, height and the letterbox of each image)."""
    dets = postprocess(model.decode(model(imgs)), **post)
    out = []
    for d, meta in zip(dets, metas):
        d = d.clone()
        d[:, :4] = meta["letterbox"].inverse_boxes(d[:, :4], meta["width"], meta["height"])
        out.append(d)
    return out
