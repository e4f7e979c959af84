"""Darknet ``.weights`` files: a header, then every ``[convolutional]`` layer's parameters in cfg order.

Layout (darknet ``save_weights``/``load_weights``, parser.c): int32 major, minor, revision; the images seen
(int64 when major * 10 + minor >= 2, else int32); then per conv layer, float32: with ``batch_normalize=1``
BN shift (biases), BN scale, rolling mean, rolling variance, else the conv biases; then the conv weights
(filters x channels/groups x size x size). No library reads or writes it outside Darknet and OpenCV's
importer (which only reads), hence this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cfg import conv_layers

BN_KEYS = ("bias", "scale", "mean", "var")


def _shapes(layer: dict) -> list[tuple[str, int]]:
    n = layer["filters"]
    w = n * (layer["c_in"] // layer["groups"]) * layer["size"] ** 2
    return [(k, n) for k in (BN_KEYS if layer["bn"] else ("bias",))] + [("weight", w)]


def write_weights(path: str | Path, cfg_path: str | Path, params: list[dict], seen: int = 0) -> Path:
    """Writes ``params`` (per conv layer of ``cfg_path``, in order: arrays named as in ``BN_KEYS`` + ``weight``,
    or ``bias`` + ``weight`` without BN) as a Darknet 0.2 ``.weights`` file."""
    layers = conv_layers(cfg_path)
    if len(params) != len(layers):
        raise ValueError(f"{cfg_path} has {len(layers)} convolutional layers; {len(params)} parameter sets given")
    path = Path(path)
    with path.open("wb") as f:
        np.array([0, 2, 0], dtype="<i4").tofile(f)
        np.array([seen], dtype="<i8").tofile(f)
        for layer, p in zip(layers, params):
            for key, size in _shapes(layer):
                a = np.asarray(p[key], dtype="<f4").reshape(-1)
                if a.size != size:
                    raise ValueError(
                        f"layer {layer['index']} ({cfg_path}): {key} has {a.size} values, the cfg needs {size}"
                    )
                a.tofile(f)
    return path


def read_weights(path: str | Path, cfg_path: str | Path) -> list[dict]:
    """The parameters of every conv layer of ``cfg_path`` from the ``.weights`` file ``path`` (checked to hold
    exactly as many values as the cfg needs)."""
    raw = Path(path).read_bytes()
    major, minor, _ = np.frombuffer(raw[:12], dtype="<i4")
    offset = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16
    values = np.frombuffer(raw[offset:], dtype="<f4")
    layers, out, i = conv_layers(cfg_path), [], 0
    need = sum(size for layer in layers for _, size in _shapes(layer))
    if need != values.size:
        raise ValueError(
            f"{path}: {values.size} float32 values after the header, but {cfg_path} needs {need}: "
            "the weights belong to another network (check the cfg and its width/classes)"
        )
    for layer in layers:
        p = {}
        for key, size in _shapes(layer):
            p[key] = values[i : i + size].copy()
            i += size
        p["weight"] = p["weight"].reshape(
            layer["filters"], layer["c_in"] // layer["groups"], layer["size"], layer["size"]
        )
        out.append(p)
    return out
