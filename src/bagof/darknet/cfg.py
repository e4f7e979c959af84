"""Reads a Darknet ``.cfg`` network definition: its sections, its convolutional layers, its parameter count.

The reference cfgs (``../shared/reference/darknet-cfg``) are the ground truth our PyTorch modules are checked
against, and the layout a ``.weights`` file follows (darknet/weights.py). Counts follow Table 1's convention:
conv weights + (BN scale and shift | conv bias); BN running statistics excluded.
"""

from __future__ import annotations

from pathlib import Path


def parse_cfg(path: str | Path) -> list[dict]:
    sections: list[dict] = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append({"type": line.strip("[]")})
        else:
            key, value = (s.strip() for s in line.split("=", 1))
            sections[-1][key] = value
    return sections


def count_parameters(path: str | Path) -> tuple[int, list[tuple]]:
    """Returns (parameter count, per-layer [(index, type, out_channels, params)])."""
    sections = parse_cfg(path)
    net = sections[0]
    channels = [int(net.get("channels", 3))]  # channels[i+1] = output of layer i
    out: list[int] = []
    total = 0
    rows = []
    for i, s in enumerate(sections[1:]):
        prev = out[-1] if out else channels[0]
        t = s["type"]
        params = 0
        if t == "convolutional":
            n = int(s["filters"])
            k = int(s["size"])
            g = int(s.get("groups", 1))
            params = n * (prev // g) * k * k + (2 * n if int(s.get("batch_normalize", 0)) else n)
            c = n
        elif t == "connected":
            n = int(s["output"])
            params = n * prev + (2 * n if int(s.get("batch_normalize", 0)) else n)
            c = n
        elif t == "route":
            idx = [int(x) for x in s["layers"].split(",")]
            idx = [j if j >= 0 else i + j for j in idx]
            c = sum(out[j] for j in idx)
            groups = int(s.get("groups", 1))
            c //= groups
        elif t in (
            "shortcut",
            "maxpool",
            "upsample",
            "avgpool",
            "softmax",
            "yolo",
            "dropout",
            "cost",
            "sam",
            "scale_channels",
        ):
            c = prev
            if t == "avgpool":
                c = prev
        else:
            raise ValueError(f"unsupported layer type {t!r} in {path}")
        out.append(c)
        total += params
        rows.append((i, t, c, params))
    return total, rows


def conv_layers(path: str | Path) -> list[dict]:
    """The ``[convolutional]`` layers in file order (Darknet's execution and ``.weights`` order), each with
    ``index``, ``c_in``, ``filters``, ``size``, ``stride``, ``groups``, ``bn`` and ``before_yolo`` (a detection
    output: its bias holds the objectness and class logits)."""
    sections = parse_cfg(path)
    _, rows = count_parameters(path)
    channels_in = [int(sections[0].get("channels", 3))] + [c for _, _, c, _ in rows]
    layers = []
    for i, s in enumerate(sections[1:]):
        if s["type"] != "convolutional":
            continue
        nxt = sections[i + 2]["type"] if i + 2 < len(sections) else ""
        layers.append(
            {
                "index": i,
                "c_in": channels_in[i],
                "filters": int(s["filters"]),
                "size": int(s["size"]),
                "stride": int(s.get("stride", 1)),
                "groups": int(s.get("groups", 1)),
                "dilation": int(s.get("dilation", 1)),
                "bn": bool(int(s.get("batch_normalize", 0))),
                "before_yolo": nxt in ("yolo", "Gaussian_yolo"),
            }
        )
    return layers
