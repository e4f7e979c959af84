"""Every toggle in conf/bof and conf/bos composes with every detector model and builds its network and
loss, or is refused with a message naming the option (as lightning-hydra-template's test_configs)."""

from pathlib import Path

import hydra
import pytest
import torch

from bagof.config import CONFIG_DIR
from bagof.features import check_features

TOGGLES = [(g, p.stem) for g in ("bof", "bos") for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]
MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml") if p.stem != "classifier")


def test_the_lists_cover_every_toggle_yaml():
    assert len(TOGGLES) == len(list(Path(CONFIG_DIR).glob("bo[fs]/*.yaml"))) >= 30 and len(MODELS) == 3


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("group,toggle", TOGGLES, ids=[f"{g}-{t}" for g, t in TOGGLES])
def test_toggle_composes_and_builds(compose, group, toggle, model):
    cfg = compose(["scale=smoke", f"model={model}", f"+{group}={toggle}", "data.img_size=64"])
    check_features(cfg)
    assert toggle in cfg.features
    try:
        net = hydra.utils.instantiate(cfg.model, _convert_="all")
    except Exception as e:  # refused: the message names the option that does not fit this model
        cause = e.__cause__ or e
        assert isinstance(cause, ValueError) and "model." in str(cause), f"{type(cause).__name__}: {cause}"
        return
    loss = hydra.utils.instantiate(cfg.loss)
    out = net(torch.rand(1, 3, 64, 64))
    total, _ = loss(out, torch.tensor([[0, 0, 8.0, 8.0, 40.0, 30.0]]), net.anchors, net.strides, net.scale_x_y)
    assert torch.isfinite(total)
    for cb in (cfg.train.get("callbacks") or {}).values():
        hydra.utils.instantiate(cb)


BOS = [t for g, t in TOGGLES if g == "bos"]


@pytest.mark.parametrize("toggle", ["none", *BOS])
def test_every_module_computes_the_same_in_nhwc(compose, toggle):
    # the cpu scale trains in NHWC (train.channels_last): each special's layers give the same loss and gradients
    # as in NCHW. In float64: a random network at 64 px is so sensitive that bf16's rounding alone turns its gradient
    # (cosine 0.07 between bf16 and float32, NCHW) and float32's summation order moves it (cosine 0.9986 with leaky
    # backbones); the thin layers' bf16 path has its own test (test_models.py)
    import copy

    cfg = compose(["scale=smoke", "data.img_size=64", *([f"+bos={toggle}"] if toggle != "none" else [])])
    torch.manual_seed(0)
    nets = {"nchw": hydra.utils.instantiate(cfg.model, _convert_="all").train().double()}
    nets["nhwc"] = copy.deepcopy(nets["nchw"]).to(memory_format=torch.channels_last)
    loss = hydra.utils.instantiate(cfg.loss)
    x = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    targets = torch.tensor([[0, 0, 8.0, 8.0, 40.0, 30.0], [2, 1, 20.0, 4.0, 60.0, 50.0]])
    totals, grads = {}, {}
    for name, net in nets.items():
        total, _ = loss(net(x), targets, net.anchors, net.strides, net.scale_x_y)
        total.backward()
        totals[name] = total.item()
        grads[name] = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    assert totals["nhwc"] == pytest.approx(totals["nchw"], rel=1e-9)
    assert torch.allclose(grads["nhwc"], grads["nchw"], rtol=1e-6, atol=1e-9 * grads["nchw"].abs().max().item())
