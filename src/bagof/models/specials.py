"""The Bag-of-Specials modules that sit between the neck and the heads, by name (``model.specials``).

A special is a module registered here under a name with its placement rank, built from the neck's
output channels, the neck's activation and its own options::

    @register_special("sam", rank=30)
    def sam(channels, act, kind="point"):
        return PerLevel(SAM(c, kind) for c in channels)

and switched on by a toggle that adds its options under ``model.specials`` (``conf/bos/sam.yaml``:
``model: {specials: {sam: {kind: point}}}``). Adding one is a module and a yaml; the detector builds
whatever ``model.specials`` names. Specials apply in rank order whatever the toggles' order on the
command line: ASFF (10) -> RFB (20) -> SAM (30) -> DropBlock (40), our placement (no reference cfg of
the paper's Table 5 variants ships with it). Modules in ``bagof.models.layers`` and
``bagof.models.necks`` are imported when a special is looked up, so their registrations are found.
"""

from __future__ import annotations

import importlib
import pkgutil
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


def _import_modules() -> None:
    from . import layers, necks

    for pkg in (layers, necks):
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def build_specials(specs: Mapping[str, Mapping] | None, channels: list[int], act: str) -> nn.Sequential:
    """``specs``: {name: options} (null options = defaults) -> the specials in rank order."""
    if not specs:
        return nn.Sequential()
    _import_modules()
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
