"""COCO AP on a resample of the test images, for the test-set component of a table's intervals.

pycocotools matches detections to ground truth per image (``COCOeval.evaluate``) and then pools the images
(``accumulate``); AP is not an average over images, so a bootstrap must pool a resampled multiset of images.
``accumulate`` can only pool each evaluated image once, hence this module: ``evaluate`` runs once per run,
and ``ap`` pools any multiset of its per-image records (an image drawn twice counts its boxes twice) with
pycocotools' own arithmetic (101-point interpolated precision, detections sorted by score with mergesort,
AP@[.5:.95], all areas, 100 detections an image). On the identity resample it equals ``COCOeval``'s AP
(tests/test_stats.py checks it to 1e-12).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

MATCHES = "matches.json.gz"  # a run's artifact: the test set's ground truth and the run's detections
COMPACT = "matches.perimage.json.gz"  # the same run's ``evaluate`` result, compact (a restored run's artifact)


@dataclass
class PerImage:
    """One run's matches: for each image id, per category, (scores, matched (T, D), ignored (T, D), n gt)."""

    image_ids: list[int]
    cat_ids: list[int]
    rec: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None]]
    rec_thrs: np.ndarray
    n_iou: int


def evaluate(gt: dict, results: list[dict]) -> PerImage:
    """Runs pycocotools' per-image matching once (bbox, all areas, maxDets 100)."""
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy({k: gt[k] for k in ("images", "annotations", "categories")})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        if not results:
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
    p = ev.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    max_det = p.maxDets[-1]
    rec: dict[int, list] = {i: [] for i in p.imgIds}
    for k, _ in enumerate(p.catIds):
        for i, img in enumerate(p.imgIds):
            e = ev.evalImgs[k * n_area * n_img + 0 * n_img + i]  # area index 0: all
            if e is None:
                rec[img].append(None)
                continue
            rec[img].append(
                (
                    np.asarray(e["dtScores"][:max_det], float),
                    np.asarray(e["dtMatches"][:, :max_det]),
                    np.asarray(e["dtIgnore"][:, :max_det]),
                    int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)),
                )
            )
    return PerImage(list(p.imgIds), list(p.catIds), rec, np.asarray(p.recThrs), len(p.iouThrs))


def ap(per: PerImage, image_ids) -> float:
    """AP@[.5:.95] (in [0, 1]) pooled over ``image_ids``, repeats counted; NaN without any ground truth."""
    precisions = []
    for k in range(len(per.cat_ids)):
        recs = [per.rec[i][k] for i in image_ids if per.rec[i][k] is not None]
        npig = sum(r[3] for r in recs)
        if not recs or npig == 0:
            continue  # pycocotools' -1: the category does not count
        scores = np.concatenate([r[0] for r in recs])
        order = np.argsort(-scores, kind="mergesort")
        dtm = np.concatenate([r[1] for r in recs], axis=1)[:, order]
        dtig = np.concatenate([r[2] for r in recs], axis=1)[:, order]
        tps = np.logical_and(dtm, np.logical_not(dtig))
        fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtig))
        tp_sum = np.cumsum(tps, axis=1, dtype=float)
        fp_sum = np.cumsum(fps, axis=1, dtype=float)
        for tp, fp in zip(tp_sum, fp_sum):
            q = np.zeros(len(per.rec_thrs))
            if len(tp):
                rc = tp / npig
                pr = tp / (fp + tp + np.spacing(1))
                pr = np.maximum.accumulate(pr[::-1])[::-1]  # pycocotools' backwards max, vectorised
                inds = np.searchsorted(rc, per.rec_thrs, side="left")
                ok = inds < len(pr)
                q[ok] = pr[inds[ok]]
            precisions.append(q)
    if not precisions:
        return float("nan")
    return float(np.mean(precisions))


def to_compact(per: PerImage) -> dict:
    """``per`` as a small JSON-able dict (~20x smaller than the detections it came from), from which
    ``from_compact`` rebuilds an equal ``PerImage``: AP on any resample is the same to the last bit. Scores
    are replaced by their dense rank in the run (AP reads them only through their order, ties included); the
    matched and ignored flags (their truth is all ``ap`` reads) are packed bits."""
    import base64

    entries = [(i, k, e) for i in per.image_ids for k, e in enumerate(per.rec[i]) if e is not None]
    scores = np.concatenate([e[0] for _, _, e in entries]) if entries else np.zeros(0)
    _, rank = np.unique(scores, return_inverse=True)
    flags = [
        np.concatenate([e[j] for _, _, e in entries], axis=1) if entries else np.zeros((per.n_iou, 0)) for j in (1, 2)
    ]

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(a.tobytes()).decode()

    return {
        "image_ids": [int(i) for i in per.image_ids],
        "cat_ids": [int(c) for c in per.cat_ids],
        "rec_thrs": per.rec_thrs.tolist(),
        "n_iou": per.n_iou,
        "entries": [[int(i), k, len(e[0]), int(e[3])] for i, k, e in entries],  # image, category index, detections, gt
        "rank": b64(rank.astype(np.uint32)),
        "matched": b64(np.packbits(flags[0].astype(bool), axis=None)),
        "ignored": b64(np.packbits(flags[1].astype(bool), axis=None)),
    }


def from_compact(d: dict) -> PerImage:
    import base64

    def unb64(s: str, dtype) -> np.ndarray:
        return np.frombuffer(base64.b64decode(s), dtype=dtype)

    t = d["n_iou"]
    total = sum(n for _, _, n, _ in d["entries"])
    rank = unb64(d["rank"], np.uint32).astype(float)
    flags = [
        np.unpackbits(unb64(d[key], np.uint8))[: t * total].reshape(t, total).astype(bool)
        for key in ("matched", "ignored")
    ]
    rec: dict[int, list] = {i: [None] * len(d["cat_ids"]) for i in d["image_ids"]}
    at = 0
    for i, k, n, npig in d["entries"]:
        rec[i][k] = (rank[at : at + n], flags[0][:, at : at + n], flags[1][:, at : at + n], npig)
        at += n
    return PerImage(list(d["image_ids"]), list(d["cat_ids"]), rec, np.asarray(d["rec_thrs"]), t)
