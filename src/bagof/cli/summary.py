"""`python -m bagof.cli.summary [overrides]`: the composed model's layers, parameters and BFLOPs.

Needs no dataset on disk: only the config (classes and input size come from the data config).
BFLOPs count convolutions only and a multiply-add as 2 FLOPs, as Darknet and the paper's Table 1 do.
"""

from __future__ import annotations

import sys

import hydra
import torch
from torch import nn

from ..config import compose_config


def conv_flops(model: nn.Module, size: int) -> tuple[float, list[tuple[str, tuple, int, float]]]:
    """(total FLOPs, rows [(block, output shape, params, FLOPs)]) for one size x size image."""
    flops = {}
    hooks = []

    def conv_hook(mod, inp, out):
        flops[mod] = 2 * mod.weight[0].numel() * out.numel()

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
    shapes = {}
    blocks = [(f"{top}.{name}", mod) for top, parent in model.named_children() for name, mod in parent.named_children()]
    for name, mod in blocks:
        hooks.append(mod.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o)))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    rows = []
    for name, mod in blocks:
        out = shapes.get(name)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else tuple(tuple(o.shape) for o in out) if out else ()
        f = sum(flops.get(m, 0) for m in mod.modules())
        rows.append((name, shape, sum(p.numel() for p in mod.parameters()), f))
    return float(sum(flops.values())), rows


def main(argv: list[str]) -> None:
    cfg = compose_config(argv)
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    size = cfg.data.img_size
    total, rows = conv_flops(model, size)
    print(f"{'block':<28}{'output':<42}{'params':>14}{'BFLOPs':>10}")
    for name, shape, params, f in rows:
        print(f"{name:<28}{str(shape):<42}{params:>14,}{f / 1e9:>10.2f}")
    n = sum(p.numel() for p in model.parameters())
    print(
        f"\n{cfg.model.backbone} {cfg.model.neck}{'-SPP' if cfg.model.spp else ''}, {cfg.data.num_classes} classes, "
        f"width x{cfg.model.width} depth x{cfg.model.depth}"
    )
    print(f"parameters: {n:,}   BFLOPs at {size}x{size}: {total / 1e9:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
