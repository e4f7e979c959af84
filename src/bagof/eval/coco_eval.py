"""COCO evaluation with pycocotools, on the dataset's own image and category ids."""

from __future__ import annotations

import contextlib
import copy
import io
import math

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_coco_results(dets, image_id: int, categories: list[dict]) -> list[dict]:
    """(K, 6) [x1, y1, x2, y2, score, class index] in original pixels -> COCO result dicts."""
    out = []
    for x1, y1, x2, y2, score, cls in dets.tolist():
        out.append(
            {
                "image_id": image_id,
                "category_id": categories[int(cls)]["id"],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": score,
            }
        )
    return out


def coco_evaluate(gt: dict, results: list[dict], image_ids=None) -> tuple[dict[str, float], str]:
    """Returns ({AP, AP50, AP75, APs, APm, APl} in [0, 1], pycocotools' printed summary).

    ``image_ids``: the images that were predicted (``limit_val_batches`` sees part of the split); only
    their ground truth is scored. A metric without ground truth (pycocotools' -1, e.g. APs on a set with
    no small object) is NaN, "undefined", not 0."""
    if image_ids is not None:
        ids = set(image_ids)
        gt = {
            **gt,
            "images": [im for im in gt["images"] if im["id"] in ids],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
        }
    if not results:
        undefined = _undefined_metrics(gt)
        return {k: math.nan if k in undefined else 0.0 for k in METRICS}, "no detections"
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
    stats = [math.nan if v < 0 else float(v) for v in ev.stats[:6]]  # -1: no truth in that size range
    names = {c["id"]: c["name"] for c in gt["categories"]}
    buf.write("\nPer-class AP (IoU=0.50:0.95, area=all, maxDets=100; nan: no truth of that class)\n")
    for k, cat in enumerate(ev.params.catIds):  # precision: (IoU thresholds, recall, class, area, maxDets)
        p = ev.eval["precision"][:, :, k, 0, -1]
        buf.write(f"  {names.get(cat, cat)!s:<24} {p[p > -1].mean() if (p > -1).any() else math.nan:.3f}\n")
    return dict(zip(METRICS, stats)), buf.getvalue()


def _undefined_metrics(gt: dict) -> set[str]:
    """The metrics pycocotools would report as -1 for this ground truth (no box in the range)."""
    areas = [a.get("area", a["bbox"][2] * a["bbox"][3]) for a in gt["annotations"] if not a.get("iscrowd", 0)]
    out = set() if areas else {"AP", "AP50", "AP75"}
    for k, lo, hi in (("APs", 0, 32**2), ("APm", 32**2, 96**2), ("APl", 96**2, 1e10)):
        if not any(lo <= a < hi for a in areas):
            out.add(k)
    return out
