"""OA, optimized anchors (REFERENCE.md "OA"): k-means over the training boxes' (w, h) with the
distance 1 - IoU of boxes centred together, sorted by area, 3 per scale.

`make anchors DATA=bccd` (``python -m bagof.data.anchors data=bccd scale=cpu``) computes them on the
training split in network-input pixels (after letterboxing to ``data.img_size``) and writes
``conf/anchors/<data name>.yaml``; the ``+bof=optimized_anchors`` toggle reads that file.

Written by hand: k-means with an IoU distance is a dozen lines and no maintained library offers it
(scikit-learn's KMeans is Euclidean only).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..ops.boxes import wh_iou


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


def training_box_sizes(cfg) -> np.ndarray:
    """(w, h) of every training box after letterboxing to data.img_size; reads annotations only."""
    from .datamodule import load_source

    coco, _ = load_source(dict(cfg.data.train))
    size = {im["id"]: max(im["width"], im["height"]) for im in coco["images"]}
    wh = [
        np.array(a["bbox"][2:]) * cfg.data.img_size / size[a["image_id"]]
        for a in coco["annotations"]
        if not a.get("iscrowd", 0)
    ]
    return np.array(wh)


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from ..config import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=argv)
    wh = training_box_sizes(cfg)
    anchors, mean_iou = kmeans_anchors(wh, k=len(cfg.model.anchors))
    _, default_iou = mean_iou_with(wh, np.array(cfg.model.anchors) * cfg.data.img_size / cfg.model.anchors_size)
    out = Path(CONFIG_DIR) / "anchors" / f"{cfg.data.name}.yaml"
    out.parent.mkdir(exist_ok=True)
    pairs = ", ".join(f"[{w:.0f}, {h:.0f}]" for w, h in anchors)
    out.write_text(
        f"# Optimized anchors (OA) for data={cfg.data.name}: k-means (1 - IoU) over {len(wh)} training boxes,\n"
        f"# letterboxed to {cfg.data.img_size} px; written by `make anchors` on {time.strftime('%Y-%m-%d')}.\n"
        f"# Mean best IoU of the boxes with these anchors {mean_iou:.3f} (the model's defaults: {default_iou:.3f}).\n"
        f"img_size: {cfg.data.img_size}\nanchors: [{pairs}]\n"
    )
    print(f"{len(wh)} boxes, mean IoU {mean_iou:.3f} (defaults {default_iou:.3f}); anchors: {pairs}\nwritten to {out}")


def mean_iou_with(wh: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, float]:
    best = wh_iou(torch.from_numpy(np.asarray(wh, np.float64)), torch.from_numpy(np.asarray(anchors, np.float64))).amax(
        1
    )
    return best.numpy(), float(best.mean())


if __name__ == "__main__":
    main(sys.argv[1:])
