"""COCO evaluation with pycocotools, on the dataset's own image and category ids."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_coco_results(dets, image_id: int, categories: list[dict]) -> list[dict]:
    """(K, 6) [x1, y1, x2, y2, score, class index] in original pixels -> COCO result dicts."""
    out = []
    for x1, y1, x2, y2, score, cls in dets.tolist():
        out.append({"image_id": image_id, "category_id": categories[int(cls)]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return out


def coco_evaluate(gt: dict, results: list[dict]) -> tuple[dict[str, float], str]:
    """Returns ({AP, AP50, AP75, APs, APm, APl} in [0, 1], pycocotools' printed summary)."""
    if not results:
        return {k: 0.0 for k in METRICS}, "no detections"
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy({k: gt[k] for k in ("images", "annotations", "categories")})
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.maximum(ev.stats[:6], 0.0)  # pycocotools writes -1 where a size range has no truth
    return dict(zip(METRICS, map(float, stats))), buf.getvalue()
