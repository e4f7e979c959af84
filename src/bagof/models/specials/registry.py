"""The specials' registry: names, placement ranks and builders (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Special:
    name: str
    rank: int
    build: Callable[..., nn.Module]


SPECIALS: dict[str, Special] = {}


def register_special(name: str, rank: int):
    """Registers ``build(channels, act, **options) -> nn.Module`` (a list of maps in, a list out)."""

    def deco(fn):
        SPECIALS[name] = Special(name, rank, fn)
        return fn

    return deco


class PerLevel(nn.ModuleList):
    """One module per pyramid level, applied level by level."""

    def forward(self, feats):
        return [m(f) for m, f in zip(self, feats)]


def build_specials(specs: Mapping[str, Mapping] | None, channels: list[int], act: str) -> nn.Sequential:
    """``specs``: {name: options} (null options = defaults) -> the specials in rank order."""
    if not specs:
        return nn.Sequential()
    unknown = sorted(set(specs) - set(SPECIALS))
    if unknown:
        raise ValueError(f"model.specials: no special named {unknown}; registered: {sorted(SPECIALS)}")
    chosen = sorted((SPECIALS[name] for name in specs), key=lambda s: s.rank)
    mods = []
    for s in chosen:
        try:
            mods.append(s.build(list(channels), act, **dict(specs[s.name] or {})))
        except TypeError as e:
            raise ValueError(f"model.specials.{s.name}: {e}") from None
    return nn.Sequential(*mods)
