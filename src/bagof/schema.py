"""Config checks that Hydra cannot make: keys under ``train`` that nothing reads (``+train.max_epoch=3``
would otherwise be accepted and ignored) and values of the wrong type (``data.batch_size=four`` would
otherwise fail deep inside the data loader), the types read from the config files themselves. Run at config
time by ``features.check_features``."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import CONFIG_DIR
from .errors import BagofError

# keys that toggles add under train (conf/bof/*: Lightning callbacks of training-time features)
TRAIN_EXTRA = ("callbacks",)
INT, FLOAT = (int,), (int, float)
TYPED = ("seed", "data", "model", "train", "loss")  # the parts of a config whose numbers are checked


@functools.lru_cache(maxsize=1)
def reference_types() -> dict[str, tuple[type, ...]]:
    """The type of every number the default configuration sets, read from the config files themselves (the
    default composition, conf/config.yaml): an integer there must stay an integer, a float may be any number.
    No hand-kept table: a key added to a config file is checked from then on. A key whose default is null
    (``train.threads``, ``train.limit_train_batches``) has no type there and is not checked."""
    from .config import compose_config

    ref = OmegaConf.to_container(compose_config([]), resolve=True)
    out: dict[str, tuple[type, ...]] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, bool):
            return
        elif isinstance(node, int):
            out[prefix] = INT
        elif isinstance(node, float):
            out[prefix] = FLOAT

    for part in TYPED:
        walk({part: ref.get(part)}, "")
    return out


class ConfigError(BagofError):
    pass


def check_config(cfg: DictConfig) -> None:
    train = cfg.get("train")
    if train is not None:
        known = set(OmegaConf.load(Path(CONFIG_DIR) / "train" / "default.yaml")) | set(TRAIN_EXTRA)
        unknown = sorted(set(train) - known)
        if unknown:
            hints = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in unknown}
            text = ", ".join(f"train.{k}" + (f" (did you mean train.{h[0]}?)" if h else "") for k, h in hints.items())
            raise ConfigError(
                f"unknown key {text}: nothing reads it; the keys under train are in "
                f"conf/train/default.yaml ({', '.join(sorted(known))})"
            )
    for key, types in reference_types().items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # an interpolation that fails resolves (with its own message) later
            continue
        if value is None or (isinstance(value, types) and not isinstance(value, bool)):
            continue
        want = "an integer" if types is INT else "a number"
        raise ConfigError(f"{key}={value!r}: expected {want}")
