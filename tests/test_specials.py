"""Semantics of the Bag-of-Specials modules and toggles: SAM, RFB, ASFF, BiFPN / fusion weights, Gaussian
YOLO, DIoU-NMS, CSP on/off, MiWRC, per-part activations; shapes and paper-scale parameter counts."""

import itertools
import math

import pytest
import torch
from torch import nn

from bagof.darknet import count_parameters
from bagof.losses.yolo_loss import YoloLoss, gaussian_nll
from bagof.models.backbones.cspdarknet import DarkResidual
from bagof.models.detector import YoloDetector
from bagof.models.layers.activations import Mish
from bagof.models.layers.fusion import WeightedSum
from bagof.models.necks import BiFPNNeck
from bagof.models.specials.asff import ASFF
from bagof.models.specials.rfb import RFB
from bagof.models.specials.sam import SAM
from bagof.ops.anchors import YOLOV3_ANCHORS
from bagof.ops.nms import nms
from bagof.train import train

from .conftest import DARKNET_CFG, need


def n_params(m):
    return sum(p.numel() for p in m.parameters())


SPECIALS = [
    {},
    dict(specials={"asff": {}, "rfb": {}}),
    dict(specials={"sam": {"kind": "point"}}, gaussian=True),
    dict(
        specials={"dropblock": {"drop_prob": 0.1, "block_size": 3}, "sam": {"kind": "cbam"}, "asff": {}, "rfb": {}},
        gaussian=True,
    ),
]


@pytest.mark.parametrize("neck,specials", list(itertools.product(["fpn", "pan", "bifpn"], SPECIALS)))
def test_every_neck_and_head_combination_has_the_right_shapes(neck, specials):
    m = YoloDetector(
        "cspresnext50", 4, YOLOV3_ANCHORS, width=0.125, depth=0.33, backbone_act="leaky", neck=neck, **specials
    ).train()
    no = 5 + 4 + (4 if specials.get("gaussian") else 0)
    for h, w in ((128, 128), (192, 192), (160, 224)):
        outs = m(torch.rand(2, 3, h, w))
        assert [tuple(o.shape) for o in outs] == [(2, 3, h // s, w // s, no) for s in (8, 16, 32)]
        dec = m.decode(outs)
        assert dec.shape == (2, 3 * sum((h // s) * (w // s) for s in (8, 16, 32)), 9)


def test_table5_variants_parameter_counts_at_paper_scale():
    """Paper scale, 80 classes: the baseline equals csresnext50-panet-spp.cfg, YOLOv4 equals yolov4.cfg;
    each variant adds exactly its modules' parameters (printed: `pytest -s`)."""
    base_kw = dict(backbone="cspresnext50", backbone_act="leaky", num_classes=80, anchors=YOLOV3_ANCHORS)
    base = YoloDetector(**base_kw)
    assert n_params(base) == count_parameters(need(DARKNET_CFG / "csresnext50-panet-spp.cfg"))[0]
    assert n_params(YoloDetector("cspdarknet53", 80, YOLOV3_ANCHORS)) == count_parameters(DARKNET_CFG / "yolov4.cfg")[0]
    rows = {
        "CSPResNeXt50-PANet-SPP": {},
        "-RFB": dict(specials={"rfb": {}}),
        "-SAM": dict(specials={"sam": {}}),
        "-SAM-G": dict(specials={"sam": {}}, gaussian=True),
        "-ASFF-RFB": dict(specials={"asff": {}, "rfb": {}}),
    }
    print("\nTable 5 variants at paper scale (80 classes):")
    for label, kw in rows.items():
        m = YoloDetector(**base_kw, **kw)
        head_extra = (
            3 * 4 * sum(2 * c + 1 for c in (128, 256, 512)) if kw.get("gaussian") else 0
        )  # 4 more outputs/anchor
        assert n_params(m) == n_params(base) + n_params(m.specials) + head_extra
        print(f"  {label:28s} {n_params(m):>12,d}")


def test_sam_point_and_cbam_forms():
    torch.manual_seed(0)
    x = torch.rand(2, 8, 6, 6) + 0.1
    sam = SAM(8, "point").eval()
    gate = torch.sigmoid(sam.gate[1](sam.gate[0](x)))  # conv -> BN -> logistic
    assert torch.allclose(sam(x), x * gate)
    assert (sam(x) <= x).all() and (sam(x) >= 0).all()
    cbam = SAM(8, "cbam").eval()
    ratio = cbam(x) / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)  # one weight per position, all channels
    with pytest.raises(ValueError, match="point"):
        SAM(8, "spatial")


def test_rfb_branches_reach_the_dilated_receptive_field():
    rfb = RFB(8, 8).eval()
    x = torch.zeros(1, 8, 31, 31, requires_grad=True)
    rfb(x)[0, :, 15, 15].sum().backward()
    reach = (x.grad.abs().sum((0, 1)) > 0).nonzero()
    radius = (reach - 15).abs().max().item()
    assert radius == 2 + 5  # 5x5 conv (radius 2) then 3x3 with dilation 5 (radius 5)
    assert rfb(torch.rand(2, 8, 9, 9)).shape == (2, 8, 9, 9) and RFB(8, 16)(torch.rand(1, 8, 5, 5)).shape[1] == 16


def test_fusion_weights_stay_normalised():
    ws = WeightedSum(3)
    with torch.no_grad():
        ws.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
    w = ws.normalized()
    assert (w >= 0).all() and w[1] == 0 and abs(w.sum().item() - 1) < 1e-4  # relu, then sum / (eps + sum)
    a, b, c = torch.rand(3, 1, 2, 4, 4)
    assert torch.allclose(ws([a, b, c]), (2 * a + 0.5 * c) / (2.5 + 1e-4))
    neck = BiFPNNeck((16, 32, 64), (8, 16, 32))
    assert len(neck.fusions()) == 4
    opt = torch.optim.SGD(neck.parameters(), lr=10.0)
    for _ in range(3):  # even after large updates the fusion weights are non-negative and sum to ~1
        opt.zero_grad()
        sum(
            o.sum() for o in neck([torch.rand(1, 16, 16, 16), torch.rand(1, 32, 8, 8), torch.rand(1, 64, 4, 4)])
        ).backward()
        opt.step()
    for f in neck.fusions():
        w = f.normalized()
        assert (w >= 0).all() and (w.sum() <= 1) and (w.sum() > 1 - 1e-3 or w.sum() == 0)


def test_asff_weights_are_a_per_pixel_softmax():
    asff = ASFF((8, 16, 32)).eval()
    feats = [torch.rand(1, 8, 16, 16), torch.rand(1, 16, 8, 8), torch.rand(1, 32, 4, 4)]
    for level, out in zip(asff.levels, asff(feats)):
        resized = [r(x) for r, x in zip(level.resize, feats)]
        assert all(r.shape == resized[0].shape for r in resized)
        w = level.weights(resized)
        assert torch.allclose(w.sum(1), torch.ones_like(w[:, 0])) and (w >= 0).all()
        assert torch.allclose(out, level.out(sum(w[:, i : i + 1] * x for i, x in enumerate(resized))))


def test_diou_nms_keeps_far_apart_boxes_greedy_suppresses():
    # same size, IoU 0.46 > 0.45, centres 37 px apart: DIoU = 0.46 - 37^2 / (137^2 + 10^2) = 0.387 < 0.45
    boxes = torch.tensor([[0.0, 0, 100, 10], [37, 0, 137, 10]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.45).tolist() == [0]
    assert nms(boxes, scores, 0.45, method="diou").tolist() == [0, 1]
    near = torch.tensor([[0.0, 0, 100, 10], [2, 0, 102, 10]])  # nearly the same box: both suppress
    assert nms(near, scores, 0.45, method="diou").tolist() == [0]


def test_gaussian_nll_hand_computed():
    # t 0.5, mu 0.3, sigma 0.2: exp(-0.04 / 0.08) = 0.606531
    t = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    mu = torch.tensor([[0.3, 0.3, 0.3, 0.3]])
    sigma = torch.full((1, 4), 0.2)
    # the reference's normaliser sqrt(2 pi) (sigma + 0.3) = 1.253314: pdf 0.483941, -log = 0.725791
    assert gaussian_nll(t, mu, sigma).item() == pytest.approx(4 * 0.725791, abs=1e-5)
    # sigma_const 0: the textbook density, 0.606531 / sqrt(2 pi 0.04) = 1.209854, -log = -0.190500
    assert gaussian_nll(t, mu, sigma, sigma_const=0.0).item() == pytest.approx(4 * -0.190500, abs=1e-5)


GAUSS_ANCHORS = torch.tensor([[[10.0, 10.0]] * 3, [[20.0, 20.0]] * 3, [[40.0, 40.0]] * 3])
# truth: centre (12, 20) -> cell (1, 2) at stride 8, offset (0.5, 0.5); size 10x10 = the anchor -> tw = th = 0
GAUSS_TRUTH = torch.tensor([[0, 1, 7.0, 15.0, 17.0, 25.0]])


def test_gaussian_yolo_box_loss_hand_computed():
    """One truth, all raw outputs zero: mu = (0.5, 0.5, 0, 0) = t, sigma = 0.5 for every coordinate."""
    outputs = [torch.zeros(1, 3, 64 // s, 64 // s, 5 + 2 + 4) for s in (8, 16, 32)]
    loss = YoloLoss(box="mse", gaussian=True, box_weight=2.0, uc_weight=3.0)
    _, parts = loss(outputs, GAUSS_TRUTH, GAUSS_ANCHORS, (8, 16, 32), torch.ones(3))
    # each coordinate: -log(1 / (sqrt(2 pi) (0.5 + 0.3))) = 0.695795; x4; x the reference's 1/2 (2 - 100/4096)
    # assigned to all 3 anchors of stride 8 (equal shape IoU, best is the first) -> only the best: 1 positive
    nll = 4 * 0.5 * 0.695795 * (2 - 100 / 64**2)
    assert parts["box"].item() == pytest.approx(2.0 * nll, rel=1e-5)  # mu's part, weighted as a box term
    assert parts["uc"].item() == pytest.approx(3.0 * nll, rel=1e-5)  # sigma's, by uc_normalizer
    # the MSE loss of the same perfect prediction is 0; Gaussian's depends on sigma only
    plain = [o[..., :7] for o in outputs]
    assert YoloLoss(box="mse")(plain, GAUSS_TRUTH, GAUSS_ANCHORS, (8, 16, 32), torch.ones(3))[1]["box"] == 0


@pytest.mark.parametrize("xy_grad", ["darknet", "sigmoid"])
@pytest.mark.parametrize("box", ["mse", "ciou"])
def test_gaussian_yolo_sigma_gradient_is_the_references_delta(box, xy_grad):
    """The gradient on sigma's raw outputs against delta_gaussian_yolo_box's delta_u, written out here from the
    reference (sigma_const 0.3, temp = 1/2 (2 - w h) N / (N + 1e-9), times uc_normalizer; backward copies it to the
    raw output): dL/draw = -delta_u, times sigma (1 - sigma) only when backpropagating through the sigmoid."""
    torch.manual_seed(0)
    outputs = [(0.5 * torch.randn(1, 3, 64 // s, 64 // s, 5 + 2 + 4)).requires_grad_() for s in (8, 16, 32)]
    loss = YoloLoss(box=box, gaussian=True, box_weight=0.07, uc_weight=0.5, xy_grad=xy_grad)
    total, _ = loss(outputs, GAUSS_TRUTH, GAUSS_ANCHORS, (8, 16, 32), torch.ones(3))
    total.backward()
    p = outputs[0].detach()[0, 0, 2, 1]  # the truth's cell (gx 1, gy 2), its best anchor 0
    mu = torch.cat([p[:2].sigmoid(), p[2:4]])
    t = torch.tensor([0.5, 0.5, 0.0, 0.0])
    sigma = p[7:11].sigmoid()
    in_exp = (t - mu) / sigma
    normal = torch.exp(-0.5 * in_exp**2) / (math.sqrt(2 * math.pi) * (sigma + 0.3))
    temp = 0.5 / (normal + 1e-9) * normal * (2 - 100 / 64**2)
    delta_u = 0.5 * temp * (in_exp**2 / sigma - 1 / (sigma + 0.3))
    expected = -delta_u * (1 if xy_grad == "darknet" else sigma * (1 - sigma))
    assert torch.allclose(outputs[0].grad[0, 0, 2, 1, 7:11], expected, rtol=1e-4, atol=1e-7)
    if box == "mse":  # mu learns from the NLL too: tw, th (no activation) get -delta_w, -delta_h x iou_normalizer
        delta_wh = 0.07 * temp[2:] * in_exp[2:] / sigma[2:]
        assert torch.allclose(outputs[0].grad[0, 0, 2, 1, 2:4], -delta_wh, rtol=1e-4, atol=1e-7)


def test_gaussian_score_is_uncertainty_aware():
    m = YoloDetector("cspresnext50", 2, YOLOV3_ANCHORS, width=0.125, depth=0.33, gaussian=True)
    outs = [torch.zeros(1, 3, 128 // s, 128 // s, 11) for s in (8, 16, 32)]
    outs[0][..., 7:] = 2.0  # sigma = sigmoid(2) = 0.8808 on stride 8
    dec = m.decode(outs)
    n8 = 3 * 16 * 16
    assert torch.allclose(dec[0, :n8, 4], torch.full((n8,), 0.5 * (1 - torch.sigmoid(torch.tensor(2.0)).item())))
    assert torch.allclose(dec[0, n8:, 4], torch.full((dec.shape[1] - n8,), 0.25))  # sigma 0.5 -> 0.5 x 0.5
    assert torch.allclose(dec[0, :, 5:], torch.full_like(dec[0, :, 5:], 0.5))  # class scores unchanged


def test_gaussian_model_and_loss_must_agree(compose):
    import hydra

    from bagof.tasks import DetectionTask

    cfg = compose(["scale=smoke", "+model.gaussian=true"])
    with pytest.raises(ValueError, match="bos=gaussian"):
        DetectionTask(
            hydra.utils.instantiate(cfg.model),
            hydra.utils.instantiate(cfg.loss),
            cfg.train.optimizer,
            cfg.train.scheduler,
            cfg.train.postprocess,
        )


def test_csp_off_and_miwrc():
    from bagof.models.backbones.cspresnext import CSPResNeXtStage, ResNeXtBlock

    plain = YoloDetector("cspresnext50", 80, YOLOV3_ANCHORS, backbone_act="leaky", csp=False)
    assert not any(isinstance(m, CSPResNeXtStage) for m in plain.modules())
    assert [sum(isinstance(b, ResNeXtBlock) for b in st.modules()) for st in plain.backbone.stages] == [3, 4, 6, 3]
    assert plain.backbone.out_channels == (512, 1024, 2048)
    with pytest.raises(ValueError, match="no option"):
        YoloDetector("darknet53", 80, YOLOV3_ANCHORS, csp=False)
    torch.manual_seed(0)
    block = DarkResidual(8, 4, "leaky", miwrc=True).eval()
    x = torch.rand(1, 8, 5, 5)
    y = block.cv2(block.cv1(x))
    assert torch.allclose(block(x), (x + y) / (2 + 1e-4))  # initial weights 1, 1: fast-normalised


def test_activation_toggles_per_part(compose):
    import hydra

    cfg = compose(["scale=smoke", "+bos=[backbone_swish,neck_mish]"])
    m = hydra.utils.instantiate(cfg.model)
    assert any(isinstance(x, nn.SiLU) for x in m.backbone.modules()) and not any(
        isinstance(x, Mish) for x in m.backbone.modules()
    )
    assert any(isinstance(x, Mish) for x in m.neck.modules()) and not any(
        isinstance(x, nn.SiLU) for x in m.neck.modules()
    )


def test_specials_compose_and_train(compose):
    cfg = compose(
        [
            "scale=smoke",
            "model=cspresnext50_panet_spp",
            "logger=none",
            "+bos=[sam,gaussian,asff,rfb,diou_nms,miwrc]",
            "+bof=[ciou,mosaic]",
        ]
    )
    assert 0.0 <= train(cfg) <= 1.0


def test_specials_apply_in_placement_order_whatever_the_toggle_order(compose):
    import hydra

    from bagof.models.specials.asff import ASFF
    from bagof.models.specials.sam import SAM

    cfg = compose(["scale=smoke", "+bos=[sam,asff]"])
    assert list(cfg.model.specials) == ["sam", "asff"]  # the order the toggles were given
    m = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert isinstance(m.specials[0], ASFF) and isinstance(m.specials[1][0], SAM)  # ASFF before SAM


def test_a_new_special_is_a_module_and_a_yaml(tmp_path, monkeypatch):
    """No edit to detector.py: a registered module plus a conf/bos yaml naming it."""
    import shutil

    import hydra
    from hydra import compose, initialize_config_dir
    from torch import nn

    from bagof.config import CONFIG_DIR
    from bagof.models import specials

    class Double(nn.Module):
        def forward(self, feats):
            return [2 * f for f in feats]

    monkeypatch.setitem(specials.SPECIALS, "double", specials.Special("double", 25, lambda channels, act: Double()))
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "bos" / "double.yaml").write_text(
        "# @package _global_\nmodel:\n  specials: {double: {}}\nfeatures:\n  double: double\n"
    )
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["scale=smoke", "+bos=[double,rfb]"])
    m = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert [type(x).__name__ for x in m.specials] == ["PerLevel", "Double"]  # RFB (20) before Double (25)
    with pytest.raises(ValueError, match="no special named \\['nope'\\]"):
        YoloDetector("cspdarknet53", 2, YOLOV3_ANCHORS, width=0.125, depth=0.33, specials={"nope": {}})
