"""Activations by name (REFERENCE.md "Activations"): leaky ReLU (slope 0.1), Swish, Mish, linear, logistic."""

from __future__ import annotations

from torch import nn

_ACTS = {
    "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "mish": lambda: nn.Mish(inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "logistic": nn.Sigmoid,
    "linear": nn.Identity,
}


def create_act(name: str) -> nn.Module:
    try:
        return _ACTS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTS)}") from None
