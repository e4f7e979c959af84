"""Config checks that Hydra cannot make: keys under ``train`` that nothing reads (``+train.max_epoch=3``
would otherwise be accepted and ignored) and values of the wrong type (``data.batch_size=four`` would
otherwise fail deep inside the data loader). Run at config time by ``features.check_features``."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import CONFIG_DIR
from .errors import BagofError

# keys that toggles add under train (conf/bof/*: Lightning callbacks of training-time features)
TRAIN_EXTRA = ("callbacks",)
INT, FLOAT = (int,), (int, float)
TYPES = {
    "seed": INT,
    "data.batch_size": INT,
    "data.img_size": INT,
    "data.num_workers": INT,
    "data.num_classes": INT,
    "data.cache_ram_mb": FLOAT,
    "data.mosaic": FLOAT,
    "train.max_epochs": INT,
    "train.accumulate": INT,
    "train.eval_every": INT,
    "train.log_every_n_steps": INT,
    "train.optimizer.lr": FLOAT,
    "train.optimizer.momentum": FLOAT,
    "train.optimizer.weight_decay": FLOAT,
    "train.scheduler.burn_in": FLOAT,
    "train.postprocess.conf_thresh": FLOAT,
    "train.postprocess.iou_thresh": FLOAT,
    "train.postprocess.max_det": INT,
    "model.width": FLOAT,
    "model.depth": FLOAT,
    "train.limit_train_batches": FLOAT,
    "train.limit_val_batches": FLOAT,
    "train.threads": INT,
}


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
    for key, types in TYPES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # an interpolation that fails resolves (with its own message) later
            continue
        if value is None or (isinstance(value, types) and not isinstance(value, bool)):
            continue
        want = "an integer" if types is INT else "a number"
        raise ConfigError(f"{key}={value!r}: expected {want}")
