"""Hydra/OmegaConf helpers shared by run.py, the summary tool and the tests."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)


def optimized_anchors(data_name: str, key: str):
    """``${anchors:<data name>,<key>}``: a value from conf/anchors/<data name>.yaml (made by `make anchors`)."""
    path = Path(CONFIG_DIR) / "anchors" / f"{data_name}.yaml"
    if not path.is_file():
        from .errors import BagofError

        raise BagofError(f"no optimized anchors for data={data_name} ({path} missing): "
                         f"run `make anchors DATA={data_name}` first")
    return OmegaConf.load(path)[key]


if not OmegaConf.has_resolver("anchors"):
    OmegaConf.register_new_resolver("anchors", optimized_anchors)


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


def compose_config(overrides=()) -> DictConfig:
    """The composed config for ``overrides``; works standalone and inside a running Hydra app (a sweeper)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside @hydra.main: its config search path is ours
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))
