"""Conflicts between feature toggles.

Every toggle in ``conf/bof`` / ``conf/bos`` adds ``features.<toggle>: <slot>``; Hydra merges these
keys, so all applied toggles stay visible. Two toggles filling one slot (two box losses) are a
contradiction that Hydra itself would resolve silently (the last one wins): refuse it instead.
"""
from __future__ import annotations

from collections import defaultdict

from omegaconf import DictConfig

from .errors import BagofError


class FeatureConflict(BagofError):
    pass


def check_features(cfg: DictConfig) -> None:
    by_slot: dict[str, list[str]] = defaultdict(list)
    for toggle, slot in (cfg.get("features") or {}).items():
        by_slot[slot].append(toggle)
    clashes = {slot: names for slot, names in by_slot.items() if len(names) > 1}
    if clashes:
        text = "; ".join(f"{' and '.join(sorted(n))} both set the {s.replace('_', ' ')}" for s, n in clashes.items())
        raise FeatureConflict(f"contradictory feature toggles: {text}. Keep one of them in +bof/+bos.")
