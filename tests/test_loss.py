import math

import pytest
import torch

from bagof.losses import YoloLoss
from bagof.losses.yolo_loss import smooth_labels
from bagof.ops.anchors import YOLOV3_ANCHORS
from bagof.ops.boxes import wh_iou

# a 64x64 input, one anchor per scale: 8x8, 4x4 and 2x2 maps; one class
ANCHORS = torch.tensor([[[8.0, 8.0]], [[32.0, 32.0]], [[64.0, 64.0]]])
STRIDES = (8, 16, 32)
SXY = torch.ones(3)
LOG2 = math.log(2)


def zero_outputs():
    return [torch.zeros(1, 1, n, n, 6, requires_grad=True) for n in (8, 4, 2)]


def target(cx, cy, w, h, cls=0):
    return torch.tensor([[0, cls, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], dtype=torch.float)


def test_mse_loss_hand_computed():
    # truth centre (13, 12), 8x8 -> stride-8 cell (1, 1), offsets (0.625, 0.5); zero logits predict 0.5
    loss = YoloLoss("mse")
    total, parts = loss(zero_outputs(), target(13, 12, 8, 8), ANCHORS, STRIDES, SXY)
    box = 0.5 * (2 - 64 / 64**2) * 0.125**2  # Darknet scale (2 - w*h), 0.5 * squared error
    assert parts["box"].item() == pytest.approx(box)
    # every one of the 64 + 16 + 4 cells contributes BCE(0, y) = log 2 (no negative overlaps > 0.7)
    assert parts["obj"].item() == pytest.approx(84 * LOG2)
    assert parts["cls"].item() == pytest.approx(LOG2)
    assert total.item() == pytest.approx(box + 85 * LOG2)


@pytest.mark.parametrize(
    "kind,expected",
    [("iou", 1 - 56 / 72), ("giou", 1 - 56 / 72 + (72 - 72) / 72), ("diou", 1 - 56 / 72 + 1 / (9**2 + 8**2))],
)
def test_iou_losses_hand_computed(kind, expected):
    # predicted box at the positive cell: centre (12, 12), the 8x8 anchor; truth 8x8 centred at (13, 12)
    loss = YoloLoss(kind, box_weight=0.07)
    _, parts = loss(zero_outputs(), target(13, 12, 8, 8), ANCHORS, STRIDES, SXY)
    assert parts["box"].item() == pytest.approx(0.07 * expected, rel=1e-5)


def test_ignore_thresh_drops_overlapping_negatives():
    # a 16x8 truth centred at (16, 12) is assigned to cell (2, 1); the 8x8 box predicted at cell (1, 1)
    # (x 8..16) overlaps it with IoU 0.5: ignored at ignore_thresh 0.4, a negative at 0.7
    out = zero_outputs()
    t = target(16, 12, 16, 8)
    _, strict = YoloLoss("mse", ignore_thresh=0.7)(out, t, ANCHORS, STRIDES, SXY)
    _, lenient = YoloLoss("mse", ignore_thresh=0.4)(out, t, ANCHORS, STRIDES, SXY)
    assert strict["obj"].item() - lenient["obj"].item() == pytest.approx(LOG2, abs=1e-4)  # exactly that one cell
    assert lenient["obj"].item() == pytest.approx(83 * LOG2, rel=1e-5)  # the positive itself is never ignored


def test_best_anchor_assignment_and_iou_threshold():
    anchors = torch.tensor(YOLOV3_ANCHORS, dtype=torch.float).view(3, 3, 2)
    t = target(100, 100, 30, 40)
    ious = wh_iou(t[:, 4:6] - t[:, 2:4], anchors.view(-1, 2))[0]
    best = int(ious.argmax())
    single = YoloLoss("mse").assign(t, anchors)
    assert [(s, int(a)) for s, (_, aa) in enumerate(single) for a in aa] == [(best // 3, best % 3)]
    multi = YoloLoss("mse", iou_thresh=0.213).assign(t, anchors)
    got = sorted(s * 3 + int(a) for s, (_, aa) in enumerate(multi) for a in aa)
    assert got == sorted({best} | {i for i in range(9) if ious[i] > 0.213})
    assert len(got) > 1  # this truth does match several anchors above 0.213


def test_label_smoothing_sigmoid_form():
    assert smooth_labels(torch.tensor([1.0, 0.0, 0.0]), 0.1).tolist() == pytest.approx([0.95, 0.05, 0.05])


def test_loss_gradient_flows_and_handles_empty_targets():
    out = zero_outputs()
    total, parts = YoloLoss("ciou")(out, torch.zeros(0, 6), ANCHORS, STRIDES, SXY)
    assert parts["box"].item() == 0 and parts["cls"].item() == 0
    assert total.item() == pytest.approx(84 * LOG2)
    total.backward()
    assert out[0].grad[..., 4].abs().sum() > 0


def test_unknown_box_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="loss.box='l1'"):
        YoloLoss("l1")


def test_label_smoothing_changes_the_class_loss_as_computed():
    out = zero_outputs()
    with torch.no_grad():
        out[0][0, 0, 1, 1, 5] = 2.0  # class logit at the positive cell (13, 12) -> (1, 1)
    softplus2 = math.log1p(math.exp(2.0))
    _, plain = YoloLoss("mse")(out, target(13, 12, 8, 8), ANCHORS, STRIDES, SXY)
    _, smooth = YoloLoss("mse", label_smoothing=0.1)(out, target(13, 12, 8, 8), ANCHORS, STRIDES, SXY)
    assert plain["cls"].item() == pytest.approx(softplus2 - 2.0 * 1.0, rel=1e-5)  # BCE(x, y) = softplus(x) - x y
    assert smooth["cls"].item() == pytest.approx(softplus2 - 2.0 * 0.95, rel=1e-5)


def test_toggle_configs_set_the_reference_values(compose):
    cfg = compose(["+bof=[grid_sensitivity,iou_thresh,label_smoothing,cosine]"])
    assert list(cfg.model.scale_x_y) == [1.2, 1.1, 1.05]
    assert cfg.loss.iou_thresh == 0.213 and cfg.loss.label_smoothing == 0.1
    assert cfg.train.scheduler.policy == "cosine"
