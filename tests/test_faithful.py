"""Faithfulness fixes found by an audit (issue 12, item 4): each case fails on code 0.2.0."""

import math

import numpy as np
import pytest
import torch

from bagof.data.formats import Issues, _clean_box
from bagof.eval import coco_evaluate, to_coco_results
from bagof.losses import YoloLoss
from bagof.ops.letterbox import letterbox
from bagof.ops.nms import batched_nms, nms

from .test_eval import CATS, GT
from .test_loss import ANCHORS, STRIDES, target


def test_class_aware_nms_with_negative_coordinates():
    """NMS runs before clipping: boxes may be negative. An offset of max + 1 per class moved class 1's
    [-101, -101, -1, -1] onto class 0's [300, 300, 400, 400], and one suppressed the other."""
    boxes = torch.tensor([[300.0, 300, 400, 400], [-101, -101, -1, -1]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.45)
    assert sorted(keep.tolist()) == [0, 1]
    same = batched_nms(boxes[[0, 0]], torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.45)
    assert same.tolist() == [0]  # still suppresses within a class


def test_only_the_images_seen_are_scored():
    """With limit_val_batches, perfect predictions on the images seen scored against the whole split's
    ground truth counted every unseen truth as missed."""
    res = to_coco_results(torch.tensor([[10, 10, 50, 50, 0.9, 0]]), 11, CATS)  # image 11 only, perfect
    assert coco_evaluate(GT, res)[0]["AP"] < 0.6
    assert coco_evaluate(GT, res, image_ids=[11])[0]["AP"] == pytest.approx(1.0)


def test_metrics_without_truth_are_undefined_not_zero():
    res = to_coco_results(torch.tensor([[10, 10, 50, 50, 0.9, 0]]), 11, CATS)
    m = coco_evaluate(GT, res)[0]
    assert math.isnan(m["APs"]) and math.isnan(m["APl"]) and m["APm"] >= 0  # GT: two medium boxes only
    assert math.isnan(coco_evaluate(GT, [])[0]["APs"]) and coco_evaluate(GT, [])[0]["AP"] == 0.0


def test_centre_gradient_skips_the_sigmoid_derivative_as_darknet():
    """Darknet passes delta = scale * (t - x) of the activated centre to the raw output unchanged."""

    def grads(mode):
        out = [torch.zeros(1, 1, n, n, 6) for n in (8, 4, 2)]
        out[0][0, 0, 1, 1, 0] = 1.0  # raw x of the positive (cell 1, 1 at stride 8)
        out = [o.requires_grad_() for o in out]
        total, _ = YoloLoss("mse", xy_grad=mode)(out, target(13, 12, 8, 8), ANCHORS, STRIDES, torch.ones(3))
        total.backward()
        return out[0].grad[0, 0, 1, 1, :2]

    scale = 2 - 64 / 64**2
    sx = torch.sigmoid(torch.tensor(1.0))
    g_dark, g_sig = grads("darknet"), grads("sigmoid")
    assert g_dark[0].item() == pytest.approx(scale * (sx - 0.625).item(), rel=1e-5)  # (x - t), no sigmoid'
    assert g_dark[1].item() == pytest.approx(scale * (0.5 - 0.5), abs=1e-7)
    assert g_sig[0].item() == pytest.approx(scale * (sx - 0.625).item() * (sx * (1 - sx)).item(), rel=1e-5)
    with pytest.raises(ValueError, match="xy_grad"):
        YoloLoss("mse", xy_grad="magic")


def test_centre_gradient_of_iou_losses_skips_the_sigmoid_too():
    out = [torch.zeros(1, 1, n, n, 6, requires_grad=True) for n in (8, 4, 2)]
    total, _ = YoloLoss("ciou", xy_grad="darknet")(out, target(13, 12, 8, 8), ANCHORS, STRIDES, torch.ones(3))
    total.backward()
    ref = [torch.zeros(1, 1, n, n, 6, requires_grad=True) for n in (8, 4, 2)]
    total_ref, _ = YoloLoss("ciou", xy_grad="sigmoid")(ref, target(13, 12, 8, 8), ANCHORS, STRIDES, torch.ones(3))
    assert total.item() == pytest.approx(total_ref.item())  # same value
    total_ref.backward()
    g, g_ref = out[0].grad[0, 0, 1, 1, 0], ref[0].grad[0, 0, 1, 1, 0]
    assert g.item() == pytest.approx(g_ref.item() / 0.25, rel=1e-5)  # sigmoid'(0) = 1/4 left out


def test_diou_nms_uses_the_reference_beta():
    """yolov4.cfg beta_nms = 0.6: overlap = IoU - (rho^2/c^2)^0.6. Two 100x10 boxes 29 px apart: IoU 0.5504,
    rho^2/c^2 = 841/16741 = 0.0502; beta 1: 0.500 > 0.45 (suppressed), beta 0.6: 0.384 (kept)."""
    boxes = torch.tensor([[0.0, 0, 100, 10], [29, 0, 129, 10]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.45, method="diou", beta=1.0).tolist() == [0]
    assert nms(boxes, scores, 0.45, method="diou").tolist() == [0, 1]


def test_diou_nms_toggle_sets_the_cfg_beta(compose):
    assert compose(["+bos=diou_nms"]).train.postprocess.beta_nms == 0.6


def test_a_box_under_one_pixel_inside_the_image_is_kept():
    issues = Issues()
    assert _clean_box(10.0, 10.0, 10.5, 20.0, 64, 64, "x", issues) == (10.0, 10.0, 10.5, 20.0)
    assert not issues
    assert _clean_box(70.0, 10.0, 80.0, 20.0, 64, 64, "x", issues) is None  # entirely outside: dropped
    assert issues["degenerate_box"] == 1


def test_letterbox_maps_boxes_by_the_actual_resize_factors():
    """333 x 100 to 64: nominal factor 0.19219, the image is resized to 64 x 19 (factor 0.19 vertically)."""
    img = np.zeros((100, 333, 3), np.uint8)
    canvas, lb = letterbox(img, 64)
    whole = lb.forward_boxes(np.array([[0, 0, 333, 100]], np.float32))[0]
    assert whole.tolist() == pytest.approx([lb.pad_x, lb.pad_y, lb.pad_x + 64, lb.pad_y + 19])
    back = lb.inverse_boxes(whole[None].copy(), 333, 100)[0]
    assert back.tolist() == pytest.approx([0, 0, 333, 100], abs=1e-3)
