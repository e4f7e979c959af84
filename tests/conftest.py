"""Shared fixtures: the shared datasets' location and a composed config with an isolated store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bagof.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("BAGOF_DATASETS", ROOT.parent / "shared" / "datasets"))
DARKNET_CFG = Path(os.environ.get("BAGOF_DARKNET_CFG", ROOT.parent / "shared" / "reference" / "darknet-cfg"))

torch.set_num_threads(2)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (set BAGOF_DATASETS / BAGOF_DARKNET_CFG)")
    return path


@pytest.fixture
def compose(tmp_path, monkeypatch):
    """compose(overrides) -> the real config, with store, caches and outputs under tmp_path."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    monkeypatch.setenv("BAGOF_ROOT", str(tmp_path))
    monkeypatch.setenv("BAGOF_DATASETS", str(DATASETS))
    monkeypatch.setenv("BAGOF_DARKNET_CFG", str(DARKNET_CFG))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")

    def _compose(overrides=()):
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))

    return _compose


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A sweep's world under tmp_path: repo root (reports/, outputs/), MLflow store, working directory."""
    monkeypatch.setenv("BAGOF_ROOT", str(tmp_path))
    monkeypatch.setenv("BAGOF_DATASETS", str(DATASETS))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path
