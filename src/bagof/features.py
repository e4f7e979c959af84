"""Conflicts between feature toggles.

Every toggle in ``conf/bof`` / ``conf/bos`` adds ``features.<toggle>: <slot>``; Hydra merges these
keys, so all applied toggles stay visible. Two toggles filling one slot (two box losses) are a
contradiction that Hydra itself would resolve silently (the last one wins): refuse it instead.

The GA toggle (slot ``hyperparameters``) sets tuned values for keys that other toggles also set (the
anchor IoU threshold of IT, the grid factor of S). The explicit toggle must win, so ``ga`` has to come
before them in ``+bof=[...]`` (Hydra applies the list in order); the other order is refused too.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import CONFIG_DIR
from .errors import BagofError


class FeatureConflict(BagofError):
    pass


def check_features(cfg: DictConfig) -> None:
    """Config-time checks of a composed config: unknown train keys and wrong types (``schema``), then toggles."""
    from .schema import check_config

    check_config(cfg)
    by_slot: dict[str, list[str]] = defaultdict(list)
    for toggle, slot in (cfg.get("features") or {}).items():
        by_slot[slot].append(toggle)
    clashes = {slot: names for slot, names in by_slot.items() if len(names) > 1}
    if clashes:
        text = "; ".join(f"{' and '.join(sorted(n))} both set the {s.replace('_', ' ')}" for s, n in clashes.items())
        raise FeatureConflict(f"contradictory feature toggles: {text}. Keep one of them in +bof/+bos.")
    order = list(cfg.get("features") or {})
    for i, toggle in enumerate(order):
        if cfg.features[toggle] != "hyperparameters":
            continue
        tuned = {k for k in _toggle_keys(toggle) if not k.startswith(f"{toggle}.")}  # its own settings aside
        for earlier in order[:i]:
            shared = sorted(tuned & _toggle_keys(earlier))
            if shared:
                raise FeatureConflict(
                    f"+bof={toggle} sets {', '.join(shared)}, which the {earlier} toggle sets too, and "
                    f"comes after it, so the tuned value would silently replace the toggle's: list "
                    f"{toggle} first, e.g. '+bof=[{toggle},{earlier},...]'."
                )


def _keys(path: Path) -> set[str]:
    """Dotted keys a config file sets (its ``features`` and ``defaults`` aside)."""
    if not path.is_file():
        return set()
    node = OmegaConf.to_container(OmegaConf.load(path))
    out: set[str] = set()

    def walk(d, prefix=""):
        for k, v in d.items():
            if not prefix and k in ("features", "defaults"):
                continue
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out.add(f"{prefix}{k}")

    walk(node or {})
    return out


def _toggle_keys(toggle: str) -> set[str]:
    return _keys(Path(CONFIG_DIR) / "bof" / f"{toggle}.yaml") | _keys(Path(CONFIG_DIR) / "bos" / f"{toggle}.yaml")
