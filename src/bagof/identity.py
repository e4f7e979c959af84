"""Identity of a run for the result cache: a hash of the resolved config, plus seed and code version.

Keys that do not change results (paths, logging, progress bars, loader workers, threads, cuDNN autotuning) are left
out, and paths are hashed as placeholders, so the same row on another machine or folder has the same hash.
A scale preset's settings for the search (``scale.ga_fraction``) and for other tasks (``scale.classify``)
act only through the keys they set, so they are left out too. ``data.tune`` (the GA search's hold-out) is
read by the search alone, and ``task: detect`` / ``model.backbone_weights: null`` / ``model.specials: {}``
are what a config without those keys meant before they existed.

A change to results bumps ``bagof.__version__`` (CHANGELOG.md says which results it invalidated).
"""

from __future__ import annotations

import copy
import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from . import __version__

CODE_VERSION = __version__  # bump bagof.__version__ when a change alters training results
VOLATILE = ("paths", "logger", "experiment", "run_name", "seed", "hydra")
VOLATILE_SCALE = ("ga_fraction", "classify", "detect")
VOLATILE_TRAIN = (
    *("progress_bar", "log_every_n_steps", "threads", "accelerator", "devices", "strategy", "resume"),
    "cudnn_benchmark",  # speed only; the memory layout (channels_last) is in: the two layouts round differently
)


def config_hash(cfg: DictConfig) -> str:
    return hashlib.sha1(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity(cfg: DictConfig) -> dict:
    """The resolved config less what does not change results: what ``config_hash`` hashes."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.paths = {"root": "<root>", "datasets": "<datasets>", "data_dir": "<root>/data", "darknet_cfg": "<cfg>"}
    data = OmegaConf.to_container(cfg, resolve=True)
    for k in VOLATILE:
        data.pop(k, None)
    for k in VOLATILE_TRAIN:
        data.get("train", {}).pop(k, None)
    data.get("data", {}).pop("num_workers", None)
    data.get("data", {}).pop("tune", None)
    for k in VOLATILE_SCALE:
        data.get("scale", {}).pop(k, None)
    if data.get("task") == "detect":
        data.pop("task")
    if data.get("model", {}).get("backbone_weights", "") is None:  # as a config without the key meant
        data["model"].pop("backbone_weights")
    if data.get("model", {}).get("weights", "") is None:  # as a config without the key meant
        data["model"].pop("weights")
    if data.get("train", {}).get("sync_batchnorm", None) is False:  # as a config without the key meant
        data["train"].pop("sync_batchnorm")
    for key in ("darknet_cfg", "backbone_darknet_cfg"):  # the layout .weights files are read in, not what trains
        data.get("model", {}).pop(key, None)
    if data.get("model", {}).get("specials", None) == {}:  # no special applied: as before the key existed
        data["model"].pop("specials")
    return data
