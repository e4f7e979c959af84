"""bagof models <-> Darknet ``.weights``: which PyTorch conv (and its BatchNorm) is which cfg layer.

The k-th ``[convolutional]`` of a cfg is matched to the first not yet matched Conv2d of the model, in the
order its modules are registered, with the same signature (in and out channels, kernel, stride, groups,
dilation, BatchNorm or bias). Our modules are declared in the cfg's order within each block; where a block
family is declared apart from the layers it runs between (the heads after the whole neck), the signatures
keep the order unambiguous. The match is checked, not assumed: a count or signature mismatch names the
layer, and OpenCV DNN's outputs on the exported file equal ours (tests/test_darknet.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cfg import conv_layers
from .weights import read_weights, write_weights


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]]:
    bn_after: dict[nn.Conv2d, nn.BatchNorm2d] = {}
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            mods = list(seq)
            for a, b in zip(mods, mods[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    bn_after[a] = b
    return [(n, m, bn_after.get(m)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _signature_ours(conv: nn.Conv2d, bn) -> tuple:
    c = conv
    return c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.groups, c.dilation[0], bn is not None


def _signature_cfg(layer: dict) -> tuple:
    return tuple(layer[k] for k in ("c_in", "filters", "size", "stride", "groups", "dilation", "bn"))


def match(model: nn.Module, cfg_path: str | Path) -> list[tuple[dict, nn.Conv2d, nn.BatchNorm2d | None]]:
    """(cfg layer, conv, its BatchNorm or None) for every conv layer of ``cfg_path``, in cfg order."""
    layers = conv_layers(cfg_path)
    ours = _conv_bn_pairs(model)
    if len(ours) != len(layers):
        raise ValueError(
            f"{cfg_path} has {len(layers)} convolutional layers, the model {len(ours)}: build the model the cfg "
            "describes (architecture, width/depth 1, its class count)"
        )
    used, out = set(), []
    for layer in layers:
        want = _signature_cfg(layer)
        j = next((j for j, (_, c, b) in enumerate(ours) if j not in used and _signature_ours(c, b) == want), None)
        if j is None:
            raise ValueError(
                f"{cfg_path} layer {layer['index']} (conv {want[0]}->{want[1]}, {want[2]}x{want[2]}/{want[3]}, "
                f"groups {want[4]}, dilation {want[5]}, {'BN' if want[6] else 'bias'}) has no counterpart left "
                "in the model"
            )
        used.add(j)
        out.append((layer, ours[j][1], ours[j][2]))
    return out


@torch.no_grad()
def load_darknet(model: nn.Module, cfg_path: str | Path, weights_path: str | Path) -> nn.Module:
    """Copies a Darknet ``.weights`` file (of the network ``cfg_path`` describes) into ``model``."""
    pairs = match(model, cfg_path)
    for (layer, conv, bn), p in zip(pairs, read_weights(weights_path, cfg_path)):
        conv.weight.copy_(torch.from_numpy(p["weight"]).view_as(conv.weight))
        if bn is None:
            conv.bias.copy_(torch.from_numpy(p["bias"]))
        else:
            bn.bias.copy_(torch.from_numpy(p["bias"]))
            bn.weight.copy_(torch.from_numpy(p["scale"]))
            bn.running_mean.copy_(torch.from_numpy(p["mean"]))
            bn.running_var.copy_(torch.from_numpy(p["var"]))
    return model


def export_darknet(model: nn.Module, cfg_path: str | Path, out_path: str | Path, seen: int = 0) -> Path:
    """Writes ``model``'s parameters as a Darknet ``.weights`` file for ``cfg_path`` (Darknet, OpenCV DNN)."""

    def arr(t):
        return t.detach().cpu().float().numpy().astype(np.float32)

    params = []
    for _, conv, bn in match(model, cfg_path):
        p = {"weight": arr(conv.weight)}
        if bn is None:
            p["bias"] = arr(conv.bias)
        else:
            p |= {
                "bias": arr(bn.bias),
                "scale": arr(bn.weight),
                "mean": arr(bn.running_mean),
                "var": arr(bn.running_var),
            }
        params.append(p)
    return write_weights(out_path, cfg_path, params, seen)
