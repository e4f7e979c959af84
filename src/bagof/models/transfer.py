"""Backbone transfer (Table 6): initialise a detector's backbone from a trained classifier.

``model.backbone_weights`` names the source:
- a file: a Lightning checkpoint (``.ckpt``) of a classification run, or a plain ``state_dict`` saved with
  ``torch.save`` (keys ``backbone.*`` or ``model.backbone.*``, or the backbone's own keys);
- an MLflow run: ``runs:/<run id>`` or the bare 32-hex run id; the run's logged checkpoint is fetched
  from the tracking store (``mlflow.set_tracking_uri`` is set by ``bagof.train.fit``).

Every backbone tensor must come from the source with the same shape (strict loading): a classifier of
another backbone, width or depth is refused with the keys and shapes that differ, never half-loaded.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import BagofError

log = logging.getLogger(__name__)
PREFIXES = ("model.backbone.", "backbone.")


class TransferError(BagofError):
    pass


def _checkpoint_file(source: str) -> Path:
    run_id = source.removeprefix("runs:/").split("/")[0] if source.startswith("runs:/") else \
        (source if re.fullmatch(r"[0-9a-f]{32}", source) else None)
    if run_id is None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise TransferError(f"model.backbone_weights={source!r}: no such file, and not an MLflow run "
                                "(runs:/<run id> or a 32-hex run id)")
        return path
    import mlflow

    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except Exception as e:
        raise TransferError(f"model.backbone_weights={source!r}: run {run_id} is not in the MLflow store "
                            f"{mlflow.get_tracking_uri()} ({type(e).__name__})") from None

    def find(path=None):
        for f in client.list_artifacts(run_id, path):
            if f.is_dir:
                hit = find(f.path)
                if hit:
                    return hit
            elif f.path.endswith(".ckpt"):
                return f.path
        return None

    art = find()
    if art is None:
        raise TransferError(f"model.backbone_weights={source!r}: run {run_id} logged no checkpoint (.ckpt); "
                            "train the classifier with logger.log_model=true (the default)")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=art))


def backbone_state(source: str) -> dict[str, torch.Tensor]:
    """The backbone tensors of ``source``, keyed as the backbone module's own ``state_dict``."""
    path = _checkpoint_file(source)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TransferError(f"model.backbone_weights: {path} is not a readable torch checkpoint ({e})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise TransferError(f"model.backbone_weights: {path} holds no state_dict")
    for prefix in PREFIXES:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(state)


def load_backbone(backbone: nn.Module, source: str) -> int:
    """Copies every tensor of ``backbone`` from ``source``; returns how many. Refuses any mismatch."""
    state = backbone_state(source)
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shapes differ: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                       for k in wrong[:3]) + (" ..." if len(wrong) > 3 else ""))
        if missing:
            parts.append(f"{len(missing)} backbone tensors missing from the source (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} source tensors with no place in this backbone (e.g. {unexpected[0]})")
        raise TransferError(f"model.backbone_weights={source!r} does not match model.backbone "
                            f"({type(backbone).__name__}): " + "; ".join(parts) +
                            ". Train the classifier with the same model.backbone, width and depth (scale) as the detector.")
    backbone.load_state_dict(state, strict=True)
    log.info("backbone initialised from %s (%d tensors)", source, len(state))
    return len(state)
