import math

import pytest
import torch

from bagof.eval import coco_evaluate, to_coco_results

CATS = [{"id": 3, "name": "a"}, {"id": 17, "name": "b"}]  # non-contiguous ids, as in COCO
GT = {
    "images": [
        {"id": 11, "width": 100, "height": 100, "file_name": "x"},
        {"id": 42, "width": 100, "height": 100, "file_name": "y"},
    ],
    "annotations": [
        {"id": 1, "image_id": 11, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 17, "bbox": [50, 20, 30, 60], "area": 1800, "iscrowd": 0},
    ],
    "categories": CATS,
}


def test_perfect_predictions_score_one_with_dataset_ids():
    res = to_coco_results(torch.tensor([[10, 10, 50, 50, 0.9, 0]]), 11, CATS)
    res += to_coco_results(torch.tensor([[50, 20, 80, 80, 0.8, 1]]), 42, CATS)
    assert res[1]["category_id"] == 17 and res[1]["bbox"] == [50, 20, 30, 60]
    metrics, text = coco_evaluate(GT, res)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert math.isnan(metrics["APs"])  # no small truths: pycocotools' -1 is undefined (NaN), not 0
    assert "Average Precision" in text


def test_wrong_class_or_shifted_box_lowers_ap():
    wrong_cls = to_coco_results(torch.tensor([[10, 10, 50, 50, 0.9, 1]]), 11, CATS)
    assert coco_evaluate(GT, wrong_cls)[0]["AP"] == 0.0
    # IoU 0.6 with the first truth: counts at IoU 0.5 but not at 0.75; the other truth is missed
    shifted = to_coco_results(torch.tensor([[10, 20, 50, 60, 0.9, 0]]), 11, CATS)
    m, _ = coco_evaluate(GT, shifted)
    assert m["AP50"] == pytest.approx(0.5, abs=0.01) and m["AP75"] == 0.0


def test_no_detections():
    assert coco_evaluate(GT, [])[0]["AP"] == 0.0


def test_the_summary_lists_each_class_ap():
    only_a = to_coco_results(torch.tensor([[10, 10, 50, 50, 0.9, 0]]), 11, CATS)  # class a perfect, b missed
    m, text = coco_evaluate(GT, only_a)
    lines = dict(line.split() for line in text.split("Per-class AP")[1].splitlines()[1:] if line.strip())
    assert float(lines["a"]) == pytest.approx(1.0) and float(lines["b"]) == 0.0
    assert m["AP"] == pytest.approx((float(lines["a"]) + float(lines["b"])) / 2)
