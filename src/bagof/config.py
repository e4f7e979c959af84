"""Hydra/OmegaConf helpers shared by run.py, the summary tool and the tests."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'a.b.c': value} for MLflow params (values as short strings)."""
    out = {}
    items = cfg.items() if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True).items()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out
