"""Darknet files: the cfg's conv layers and the .weights layout (header, per-layer order, sizes)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bagof.darknet import conv_layers, count_parameters, read_weights, write_weights

from .conftest import DARKNET_CFG, need


def initial_weights(cfg_path, num_classes: int, obj_prior: float = 0.01, seed: int = 0) -> list[dict]:
    """Parameters for every conv layer of ``cfg_path`` as a fresh bagof detector starts (torch's default conv
    init, BN identity, the heads' objectness/class bias priors), written without building a model."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in conv_layers(cfg_path):
        n, fan_in = layer["filters"], layer["c_in"] // layer["groups"] * layer["size"] ** 2
        bound = 1 / np.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)), torch's Conv2d default
        p = {"weight": rng.uniform(-bound, bound, (n, fan_in)).astype(np.float32)}
        if layer["bn"]:
            p |= {"bias": np.zeros(n), "scale": np.ones(n), "mean": np.zeros(n), "var": np.ones(n)}
        else:
            bias = rng.uniform(-bound, bound, n)
            if layer["before_yolo"]:
                per_anchor = bias.reshape(-1, 5 + num_classes)
                per_anchor[:, 4] = -np.log((1 - obj_prior) / obj_prior)
                per_anchor[:, 5:] = -np.log(max(num_classes - 1, 1))
            p["bias"] = bias
        out.append(p)
    return out


def test_yolov4_cfg_conv_layers():
    layers = conv_layers(need(DARKNET_CFG / "yolov4.cfg"))
    assert len(layers) == 110 and sum(layer["before_yolo"] for layer in layers) == 3
    assert layers[0] | {} == {
        "index": 0, "c_in": 3, "filters": 32, "size": 3, "stride": 1, "groups": 1, "dilation": 1, "bn": True,
        "before_yolo": False,
    }  # fmt: skip
    heads = [layer for layer in layers if layer["before_yolo"]]
    assert all(h["filters"] == 255 and not h["bn"] and h["size"] == 1 for h in heads)


def test_weights_round_trip_and_layout(tmp_path):
    cfg = need(DARKNET_CFG / "yolov4-tiny.cfg")
    params = initial_weights(cfg, num_classes=80, seed=1)
    path = write_weights(tmp_path / "t.weights", cfg, params, seen=123)
    raw = path.read_bytes()
    assert np.frombuffer(raw[:12], "<i4").tolist() == [0, 2, 0] and np.frombuffer(raw[12:20], "<i8")[0] == 123
    # Table 1 convention counts BN scale + shift, not the running mean/var: add those back for the file size
    n_bn = sum(layer["filters"] for layer in conv_layers(cfg) if layer["bn"])
    assert len(raw) == 20 + 4 * (count_parameters(cfg)[0] + 2 * n_bn)
    back = read_weights(path, cfg)
    first = back[0]  # BN layer: shift, scale, mean, var, then weights in (out, in, k, k)
    assert np.array_equal(first["scale"], np.ones(32)) and first["weight"].shape == (32, 3, 3, 3)
    assert np.array_equal(first["weight"].reshape(-1), params[0]["weight"].reshape(-1).astype(np.float32))
    head = back[[i for i, layer in enumerate(conv_layers(cfg)) if layer["before_yolo"]][0]]
    assert np.allclose(head["bias"].reshape(3, 85)[:, 4], -np.log(99))  # objectness prior 0.01


def test_weights_of_another_network_are_refused(tmp_path):
    tiny, v4 = need(DARKNET_CFG / "yolov4-tiny.cfg"), need(DARKNET_CFG / "yolov4.cfg")
    path = write_weights(tmp_path / "t.weights", tiny, initial_weights(tiny, 80))
    with pytest.raises(ValueError, match="belong to another network"):
        read_weights(path, v4)
    with pytest.raises(ValueError, match="convolutional layers"):
        write_weights(tmp_path / "u.weights", v4, initial_weights(tiny, 80))


@pytest.fixture(scope="module")
def yolov4_pair(tmp_path_factory):
    """bagof's YOLOv4 (random weights, BN statistics perturbed) and the same weights written as .weights."""
    from bagof.darknet.convert import export_darknet
    from bagof.models.detector import YoloDetector
    from bagof.ops.anchors import YOLOV4_512_ANCHORS

    cfg = need(DARKNET_CFG / "yolov4.cfg")
    torch.manual_seed(0)
    model = YoloDetector("cspdarknet53", 80, YOLOV4_512_ANCHORS, scale_x_y=(1.2, 1.1, 1.05), img_size=416).eval()
    for m in model.modules():  # non-trivial BN so that a misplaced statistic shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    path = export_darknet(model, cfg, tmp_path_factory.mktemp("dn") / "yolov4.weights")
    return cfg, model, path


def test_import_export_round_trip_is_byte_identical(yolov4_pair, tmp_path):
    from bagof.darknet.convert import export_darknet, load_darknet
    from bagof.models.detector import YoloDetector
    from bagof.ops.anchors import YOLOV4_512_ANCHORS

    cfg, _, path = yolov4_pair
    fresh = load_darknet(YoloDetector("cspdarknet53", 80, YOLOV4_512_ANCHORS), cfg, path)
    again = export_darknet(fresh, cfg, tmp_path / "again.weights")
    assert again.read_bytes() == path.read_bytes()


def test_a_model_of_another_shape_is_refused_naming_the_layer(yolov4_pair):
    from bagof.darknet.convert import load_darknet
    from bagof.models.detector import YoloDetector
    from bagof.ops.anchors import YOLOV4_512_ANCHORS

    cfg, _, path = yolov4_pair
    with pytest.raises(ValueError, match=r"layer \d+ \(conv .*has no counterpart"):
        load_darknet(YoloDetector("cspdarknet53", 20, YOLOV4_512_ANCHORS), cfg, path)  # 20 classes, not 80
    with pytest.raises(ValueError, match="110 convolutional layers, the model"):
        load_darknet(YoloDetector("cspresnext50", 80, YOLOV4_512_ANCHORS), cfg, path)


def test_outputs_equal_opencv_dnn_on_the_same_weights(yolov4_pair):
    """OpenCV DNN 4.x (Darknet's importer; 5.x dropped it) is an independent runtime of yolov4.cfg."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Darknet importer: install opencv-python-headless<5 (dev extra)")
    cfg, model, path = yolov4_pair
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(path))
    x = torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(1))
    net.setInput(x.numpy())
    names = ["conv_138", "conv_149", "conv_160", "yolo_139", "yolo_150", "yolo_161"]
    ref = net.forward(names)
    with torch.no_grad():
        raw = model(x)
        decoded = model.decode(raw)[0]
    for ours, theirs in zip(raw, ref[:3]):  # raw head logits, (1, 255, H, W) in Darknet's layout
        b, a, h, w, n = ours.shape
        ours = ours.permute(0, 1, 4, 2, 3).reshape(b, a * n, h, w).numpy()
        assert np.abs(ours - theirs).max() <= 1e-3 * max(1.0, np.abs(theirs).max())
    theirs = np.concatenate(ref[3:])  # decoded: cx, cy, w, h relative to the input, objectness, ...
    per_scale = [decoded[: 3 * 52 * 52], decoded[3 * 52 * 52 : 3 * (52 * 52 + 26 * 26)], decoded[-3 * 13 * 13 :]]
    ours = np.concatenate(  # ours run anchor by anchor over the grid, OpenCV's cell by cell over the anchors
        [
            d.view(3, s, s, -1).permute(1, 2, 0, 3).reshape(-1, d.shape[-1]).numpy()
            for d, s in zip(per_scale, (52, 26, 13))
        ]
    )
    assert np.allclose(ours[:, :4] / 416, theirs[:, :4], atol=1e-4)
    assert np.allclose(ours[:, 4], theirs[:, 4], atol=1e-4)


@pytest.mark.parametrize("model_cfg", ["yolov3", "cspresnext50_panet_spp"])
def test_head_outputs_equal_opencv_dnn_for_the_other_detector_cfgs(model_cfg, compose, tmp_path):
    """yolov3.cfg and csresnext50-panet-spp.cfg (the ablation tables' detector), by their raw head outputs."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Darknet importer: install opencv-python-headless<5 (dev extra)")
    import hydra

    from bagof.darknet.cfg import parse_cfg
    from bagof.darknet.convert import export_darknet

    cfg = compose([f"model={model_cfg}", "scale=paper", "data=coco", "data.img_size=416"])
    darknet_cfg = need(Path(cfg.model.darknet_cfg))
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, _convert_="all").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = export_darknet(model, darknet_cfg, tmp_path / "net.weights")
    net = cv2.dnn.readNetFromDarknet(str(darknet_cfg), str(path))
    layers = parse_cfg(darknet_cfg)[1:]  # OpenCV names a layer by its index among the cfg's sections after [net]
    heads = [f"conv_{i - 1}" for i, s in enumerate(layers) if s["type"] == "yolo"]
    x = torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(1))
    net.setInput(x.numpy())
    ref = net.forward(heads)
    with torch.no_grad():
        raw = model(x)
    by_size = {r.shape[2]: r for r in raw}  # the order of the scales differs between the cfgs
    for theirs in ref:
        ours = by_size[theirs.shape[2]]
        b, a, h, w, n = ours.shape
        ours = ours.permute(0, 1, 4, 2, 3).reshape(b, a * n, h, w).numpy()
        assert np.abs(ours - theirs).max() <= 1e-3 * max(1.0, np.abs(theirs).max()), heads


def test_a_darknet_classifier_feeds_the_detectors_backbone(tmp_path):
    """Table 6's transfer from a Darknet classifier: csdarknet53-omega's .weights -> model.backbone_weights."""
    from bagof.darknet.convert import export_darknet
    from bagof.models.classifier import Classifier
    from bagof.models.detector import YoloDetector
    from bagof.ops.anchors import YOLOV3_ANCHORS

    cfg = need(DARKNET_CFG / "csdarknet53-omega.cfg")
    torch.manual_seed(0)
    classifier = Classifier("cspdarknet53", 1000, backbone_act="mish")
    path = export_darknet(classifier, cfg, tmp_path / "omega.weights")  # our classifier is that network
    det = YoloDetector("cspdarknet53", 80, YOLOV3_ANCHORS, backbone_weights=str(path), backbone_darknet_cfg=str(cfg))
    for (k, a), b in zip(classifier.backbone.state_dict().items(), det.backbone.state_dict().values()):
        if "num_batches_tracked" not in k:
            assert torch.equal(a, b), k
    back = Classifier("cspdarknet53", 1000, backbone_act="mish", weights=str(path), darknet_cfg=str(cfg))
    assert torch.equal(back.fc.weight, classifier.fc.weight)  # model.weights reads the classifier whole
