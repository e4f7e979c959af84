"""`make anchors DATA=bccd` (``python -m bagof.cli.anchors data=bccd scale=cpu``): OA, optimized anchors
(REFERENCE.md "OA") of the training split in network-input pixels (after letterboxing to ``data.img_size``),
by ops.anchors.kmeans_anchors, written to ``conf/anchors/<data name>.yaml``; the ``+bof=optimized_anchors``
toggle reads that file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import CONFIG_DIR, compose_config
from ..ops.anchors import kmeans_anchors
from ..ops.boxes import wh_iou


def training_box_sizes(cfg) -> np.ndarray:
    """(w, h) of every training box after letterboxing to data.img_size; reads annotations only."""
    from ..data.detection import load_source

    coco, _ = load_source(dict(cfg.data.train))
    size = {im["id"]: max(im["width"], im["height"]) for im in coco["images"]}
    wh = [
        np.array(a["bbox"][2:]) * cfg.data.img_size / size[a["image_id"]]
        for a in coco["annotations"]
        if not a.get("iscrowd", 0)
    ]
    return np.array(wh)


def main(argv: list[str]) -> None:
    cfg = compose_config(argv)
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
