import subprocess
import sys

import pytest
import torch

from bagof.darknet import count_parameters
from bagof.models.classifier import Classifier
from bagof.models.detector import YoloDetector, decode_boxes
from bagof.ops.anchors import YOLOV3_ANCHORS

from .conftest import DARKNET_CFG, ROOT, need


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_classifier_backbones_match_table1():
    # Paper Table 1: CSPDarknet53 27.6 M, CSPResNeXt50 20.6 M parameters with a 1000-class head
    assert round(n_params(Classifier("cspdarknet53", 1000, backbone_act="mish")) / 1e6, 1) == 27.6
    assert round(n_params(Classifier("cspresnext50", 1000, backbone_act="leaky")) / 1e6, 1) == 20.6


def test_classifier_bflops_match_table1():
    """Table 1 at 512x512: CSPDarknet53 52 BFLOPs, CSPResNeXt50 31 BFLOPs (a multiply-add = 2 FLOPs)."""
    from bagof.cli.summary import conv_flops

    assert round(conv_flops(Classifier("cspdarknet53", backbone_act="mish"), 512)[0] / 1e9) == 52
    assert int(conv_flops(Classifier("cspresnext50", backbone_act="leaky"), 512)[0] / 1e9) == 31


def test_cspdarknet53_classifier_equals_reference_cfg():
    total, _ = count_parameters(need(DARKNET_CFG / "csdarknet53-omega.cfg"))
    assert n_params(Classifier("cspdarknet53", 1000)) == total


@pytest.mark.parametrize(
    "cfg,kwargs",
    [
        ("yolov4.cfg", dict(backbone="cspdarknet53")),
        ("csresnext50-panet-spp.cfg", dict(backbone="cspresnext50", backbone_act="leaky")),
        ("yolov3.cfg", dict(backbone="darknet53", backbone_act="leaky", neck="fpn", spp=False)),
        ("yolov3-spp.cfg", dict(backbone="darknet53", backbone_act="leaky", neck="fpn", spp=True)),
    ],
)
def test_detectors_equal_reference_cfgs(cfg, kwargs):
    """Full-size detectors (80 classes) have exactly the parameters of the reference networks."""
    total, _ = count_parameters(need(DARKNET_CFG / cfg))
    assert n_params(YoloDetector(num_classes=80, anchors=YOLOV3_ANCHORS, **kwargs)) == total


@pytest.mark.parametrize("backbone,neck", [("cspdarknet53", "pan"), ("cspresnext50", "pan"), ("darknet53", "fpn")])
@pytest.mark.parametrize("size", [128, 192])
def test_output_shapes(backbone, neck, size):
    m = YoloDetector(backbone, 5, YOLOV3_ANCHORS, width=0.125, depth=0.33, neck=neck).eval()
    outs = m(torch.zeros(2, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(2, 3, size // s, size // s, 10) for s in (8, 16, 32)]
    dec = m.decode(outs)
    assert dec.shape == (2, 3 * sum((size // s) ** 2 for s in (8, 16, 32)), 10)
    assert dec[..., 4:].min() >= 0 and dec[..., 4:].max() <= 1


def test_decode_grid_sensitivity():
    """b = (grid + s * sigmoid(t) - (s - 1) / 2) * stride; s > 1 reaches the cell borders."""
    t = torch.zeros(1, 1, 2, 2, 4)
    t[0, 0, 1, 0, :2] = 50.0  # sigmoid ~ 1
    anchors = torch.tensor([[10.0, 20.0]])
    xy, wh = decode_boxes(t, anchors, 8, 1.0)
    assert xy[0, 0, 0, 0].tolist() == pytest.approx([4.0, 4.0])  # centre of cell (0, 0)
    assert xy[0, 0, 1, 0].tolist() == pytest.approx([8.0, 16.0])  # x cell 0 -> 1.0 * 8, y cell 1 -> 2 * 8
    assert wh[0, 0, 0, 0].tolist() == pytest.approx([10.0, 20.0])
    xy, _ = decode_boxes(t, anchors, 8, 1.2)
    assert xy[0, 0, 1, 0].tolist() == pytest.approx([(1.2 - 0.1) * 8, (1 + 1.2 - 0.1) * 8])


def test_anchors_rescaled_to_input_size():
    m = YoloDetector("darknet53", 1, YOLOV3_ANCHORS, width=0.125, depth=0.33, img_size=208, anchors_size=416)
    assert m.anchors[0, 0].tolist() == [5.0, 6.5]


def test_summary_cli_without_dataset(tmp_path):
    env = {"BAGOF_ROOT": str(tmp_path), "BAGOF_DATASETS": str(tmp_path / "nowhere"), "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "bagof.cli.summary", "scale=paper", "data=coco"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "64,363,101" in out.stdout  # YOLOv4, 80 classes: the reference network's count
    assert "BFLOPs" in out.stdout and "512x512" in out.stdout


@pytest.mark.parametrize("c_out,nchw_bn", [(8, True), (16, False)])
def test_a_thin_nhwc_layer_normalises_in_nchw_with_the_same_result(c_out, nchw_bn):
    # under train.channels_last + bf16 a layer of under 16 channels normalises in NCHW (PyTorch's NHWC BatchNorm is
    # ~6x slower there): the same outputs, gradients and running statistics as the NCHW layer, NHWC handed on
    import copy

    from bagof.models.layers import ConvBNAct

    torch.manual_seed(0)
    plain = ConvBNAct(8, c_out, 3, act="mish")
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    seen = []
    nhwc[1].register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous()))
    x = torch.randn(4, 8, 12, 12)
    xs = {"plain": x.clone().requires_grad_(), "nhwc": x.contiguous(memory_format=torch.channels_last).requires_grad_()}
    g = torch.randn(4, c_out, 12, 12)
    out = {}
    for name, layer in (("plain", plain), ("nhwc", nhwc)):
        with torch.autocast("cpu", torch.bfloat16):
            y = layer(xs[name])
        y.float().backward(g)
        out[name] = y.float()
    assert seen == [nchw_bn]
    assert out["nhwc"].is_contiguous(memory_format=torch.channels_last)
    assert xs["nhwc"].grad.is_contiguous(memory_format=torch.channels_last)
    # bf16 convolutions in two layouts round differently: within bf16's precision (~3 digits)
    assert torch.allclose(out["nhwc"], out["plain"], rtol=2e-2, atol=2e-2)
    assert torch.allclose(xs["nhwc"].grad, xs["plain"].grad, rtol=5e-2, atol=5e-2)
    for (_, a), (_, b) in zip(plain.named_parameters(), nhwc.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=5e-2, atol=5e-2 * a.grad.abs().max().item())
    assert torch.allclose(plain[1].running_mean, nhwc[1].running_mean, atol=1e-2)
    assert torch.allclose(plain[1].running_var, nhwc[1].running_var, rtol=1e-2)


def test_training_does_not_depend_on_the_experiment_layer():
    """The run identity (config hash, code version) lives below training: importing the training path loads
    nothing of the sweeps, the GA search or the launcher that sit above it."""
    import subprocess
    import sys

    code = (
        "import sys, bagof.train, bagof.checkpoints, bagof.identity; "
        "print(sorted(m for m in sys.modules if m.startswith('bagof.experiments')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
