"""Anchor sets from the reference (REFERENCE.md, "OA"), in pixels of the network input, and OA's k-means.

OA, optimized anchors: k-means over the training boxes' (w, h) with the distance 1 - IoU of boxes centred
together, sorted by area, 3 per scale. Written by hand: k-means with an IoU distance is a dozen lines and no
maintained library offers it (scikit-learn's KMeans is Euclidean only).
"""

from __future__ import annotations

import numpy as np
import torch

from .boxes import wh_iou

# YOLOv3 defaults (for 416); the paper's "optimized" anchors for 512.
YOLOV3_ANCHORS = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]]
YOLOV4_512_ANCHORS = [[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146], [142, 110], [192, 243], [459, 401]]


def kmeans_anchors(wh: np.ndarray, k: int = 9, iters: int = 300, seed: int = 0) -> tuple[np.ndarray, float]:
    """(k anchors (w, h) sorted by area, mean best IoU of the boxes with them).

    Darknet's scheme: assign each box to the centroid of highest IoU, move each centroid to the mean
    of its boxes, until the assignment stops changing. Initialised k-means++-style on 1 - IoU.
    """
    wh = np.asarray(wh, dtype=np.float64)
    if len(wh) < k:
        raise ValueError(f"k-means needs at least {k} boxes, got {len(wh)}")
    rng = np.random.default_rng(seed)
    boxes = torch.from_numpy(wh)
    centroids = [wh[rng.integers(len(wh))]]
    for _ in range(k - 1):  # k-means++: far (in 1 - IoU) boxes are likelier seeds
        d = 1 - wh_iou(boxes, torch.from_numpy(np.array(centroids))).amax(1).numpy()
        centroids.append(wh[rng.choice(len(wh), p=d**2 / (d**2).sum())])
    c = np.array(centroids)
    assign = None
    for _ in range(iters):
        new = wh_iou(boxes, torch.from_numpy(c)).argmax(1).numpy()
        if assign is not None and (new == assign).all():
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                c[j] = wh[assign == j].mean(0)
    c = c[np.argsort(c.prod(1))]
    mean_iou = float(wh_iou(boxes, torch.from_numpy(c)).amax(1).mean())
    return c, mean_iou
