import math

import numpy as np
import pytest
import torch

from bagof.ops.boxes import bbox_iou, box_iou, wh_iou
from bagof.ops.letterbox import letterbox
from bagof.ops.nms import batched_nms, nms

A = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
B = torch.tensor([[1.0, 1.0, 3.0, 3.0]])


def test_iou_family_hand_computed():
    # intersection 1, union 7; enclosing box 3x3 (area 9, diagonal^2 18); centres (1,1),(2,2): rho^2 = 2
    assert bbox_iou(A, B, "iou").item() == pytest.approx(1 / 7)
    assert bbox_iou(A, B, "giou").item() == pytest.approx(1 / 7 - (9 - 7) / 9)
    assert bbox_iou(A, B, "diou").item() == pytest.approx(1 / 7 - 2 / 18)
    # same aspect ratio -> v = 0, so CIoU equals DIoU here
    assert bbox_iou(A, B, "ciou").item() == pytest.approx(1 / 7 - 2 / 18)


def test_ciou_aspect_term_hand_computed():
    p = torch.tensor([[0.0, 0.0, 4.0, 2.0]])  # w/h = 2, centre (2, 1)
    t = torch.tensor([[0.0, 0.0, 2.0, 2.0]])  # w/h = 1, centre (1, 1)
    iou = 4 / 8
    rho2, c2 = 1.0, 4**2 + 2**2
    v = 4 / math.pi**2 * (math.atan(1) - math.atan(2)) ** 2
    alpha = v / ((1 - iou) + v)
    assert bbox_iou(p, t, "ciou").item() == pytest.approx(iou - rho2 / c2 - alpha * v, rel=1e-5)


def test_ciou_alpha_is_constant_in_backward():
    p = torch.tensor([[0.0, 0.0, 4.0, 2.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    bbox_iou(p, t, "ciou").sum().backward()
    g_ciou = p.grad.clone()
    p.grad = None
    iou, v = 0.5, 4 / math.pi**2 * (math.atan(1) - math.atan(2)) ** 2
    alpha = v / ((1 - iou) + v)
    # the same gradient as DIoU - alpha * v with alpha a fixed number
    px1, py1, px2, py2 = p.unbind(-1)
    v_t = 4 / math.pi**2 * (torch.atan(torch.tensor(1.0)) - torch.atan((px2 - px1) / (py2 - py1))) ** 2
    (bbox_iou(p, t, "diou") - alpha * v_t).sum().backward()
    assert torch.allclose(g_ciou, p.grad, atol=1e-6)


def test_box_iou_matrix_and_wh_iou():
    assert box_iou(A, torch.cat([A, B])).tolist()[0] == pytest.approx([1.0, 1 / 7])
    # shape IoU ignores position: 2x2 vs 1x4 -> inter 1x2 = 2, union 4 + 4 - 2 = 6
    assert wh_iou(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 4.0]])).item() == pytest.approx(1 / 3)


def test_nms_suppresses_overlaps_keeps_order():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) suppresses 0 (IoU 0.9) and 1 (IoU 0.61); box 2 is disjoint
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    # with a high threshold nothing overlaps enough; all kept by decreasing score
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]


def test_batched_nms_is_class_aware():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([1, 1]), 0.5).tolist() == [0]
    assert batched_nms(boxes[:0], scores[:0], torch.tensor([], dtype=torch.long), 0.5).numel() == 0


def test_letterbox_round_trip():
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:200, 300:400] = 255
    out, lb = letterbox(img, 256)
    assert out.shape == (256, 256, 3)
    assert lb.scale_x == lb.scale_y == pytest.approx(0.4) and (lb.pad_x, lb.pad_y) == (0, 32)
    boxes = np.array([[300, 100, 400, 200], [0, 0, 640, 480]], np.float32)
    fwd = lb.forward_boxes(boxes)
    assert fwd[0].tolist() == pytest.approx([120, 72, 160, 112])
    assert out[72 + 2 : 112 - 2, 120 + 2 : 160 - 2].min() == 255  # the white square moved with its box
    assert lb.inverse_boxes(fwd, 640, 480) == pytest.approx(boxes)
    assert lb.inverse_boxes(torch.from_numpy(fwd), 640, 480).numpy() == pytest.approx(boxes)


def test_nms_max_keep_bounds_the_result():
    boxes = torch.tensor([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], dtype=torch.float)
    scores = torch.linspace(0.1, 1.0, 10)
    assert nms(boxes, scores, 0.5, max_keep=3).tolist() == [9, 8, 7]


def test_nms_equals_textbook_greedy_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 30 + 1], 1)
    scores = torch.rand(300, generator=g)
    iou = box_iou(boxes, boxes)
    expected, alive = [], set(range(300))
    for i in scores.argsort(descending=True).tolist():
        if i in alive:
            expected.append(i)
            alive -= {j for j in alive if iou[i, j] > 0.45}
    assert nms(boxes, scores, 0.45).tolist() == expected


def test_diou_nms_equals_textbook_greedy_on_random_boxes():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 30 + 1], 1)
    scores = torch.rand(200, generator=g)
    n = len(boxes)
    a, b = boxes[:, None].expand(n, n, 4), boxes[None].expand(n, n, 4)
    iou = box_iou(boxes, boxes)
    overlap = iou - (iou - bbox_iou(a, b, "diou")).clamp(min=0) ** 0.6  # IoU - (rho^2 / c^2) ** beta_nms
    expected, alive = [], set(range(n))
    for i in scores.argsort(descending=True).tolist():
        if i in alive:
            expected.append(i)
            alive -= {j for j in alive if overlap[i, j] > 0.45}
    assert nms(boxes, scores, 0.45, method="diou", beta=0.6).tolist() == expected


@pytest.mark.parametrize("kernels", [(5, 9, 13), (3, 7), (5,)])
def test_spp_equals_darknets_independent_max_pools(kernels):
    from bagof.models.layers import SPP

    x = torch.randn(2, 3, 11, 13) - 5  # negative values: padding must act as -inf, not 0
    expected = [torch.nn.functional.max_pool2d(x, k, 1, k // 2) for k in sorted(kernels, reverse=True)]
    assert torch.equal(SPP(kernels)(x), torch.cat(expected + [x], 1))
