"""Backbone transfer (Table 6): initialise a detector's backbone from a trained classifier.

``model.backbone_weights`` names the source:
- a file: a Lightning checkpoint (``.ckpt``) of a classification run, or a plain ``state_dict`` saved with
  ``torch.save`` (keys ``backbone.*`` or ``model.backbone.*``, or the backbone's own keys);
- an MLflow run: ``runs:/<run id>`` or the bare 32-hex run id; ``bagof.train.fit`` fetches the run's
  logged checkpoint into a local file (``bagof.checkpoints.fetch_run_checkpoint``) before the model is
  built, so this module never talks to MLflow.

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


def run_id_of(source: str) -> str | None:
    """The MLflow run id in ``runs:/<id>`` or a bare 32-hex id; None for a file path."""
    if source.startswith("runs:/"):
        return source.removeprefix("runs:/").split("/")[0]
    return source if re.fullmatch(r"[0-9a-f]{32}", source) else None


def _checkpoint_file(source: str) -> Path:
    if run_id_of(source) is not None:  # models never talk to MLflow: bagof.train.fit fetches the file first
        raise TransferError(
            f"model.backbone_weights={source!r} names an MLflow run: fetch its checkpoint first "
            "(bagof.checkpoints.fetch_run_checkpoint), as bagof.train.fit does"
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise TransferError(
            f"model.backbone_weights={source!r}: no such file, and not an MLflow run "
            "(runs:/<run id> or a 32-hex run id)"
        )
    return path


def read_state_dict(path: Path, option: str, error: type[BagofError] = TransferError) -> dict[str, torch.Tensor]:
    """The tensors of a torch file: a Lightning checkpoint's ``state_dict`` or a plain ``state_dict``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise error(f"{option}: {path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise error(f"{option}: {path} holds no state_dict")
    return state


def backbone_state(source: str) -> dict[str, torch.Tensor]:
    """The backbone tensors of ``source``, keyed as the backbone module's own ``state_dict``."""
    state = read_state_dict(_checkpoint_file(source), "model.backbone_weights")
    for prefix in PREFIXES:
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(state)


def load_backbone(backbone: nn.Module, source: str, darknet_cfg: str | None = None) -> int:
    """Copies every tensor of ``backbone`` from ``source``; returns how many. Refuses any mismatch.
    A Darknet classifier's ``.weights`` (e.g. csdarknet53-omega's) is read in ``darknet_cfg``'s layout."""
    if str(source).endswith(".weights"):
        return _load_darknet_backbone(backbone, _checkpoint_file(source), darknet_cfg)
    state = backbone_state(source)
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(
                "shapes differ: "
                + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3])
                + (" ..." if len(wrong) > 3 else "")
            )
        if missing:
            parts.append(f"{len(missing)} backbone tensors missing from the source (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} source tensors with no place in this backbone (e.g. {unexpected[0]})")
        raise TransferError(
            f"model.backbone_weights={source!r} does not match model.backbone "
            f"({type(backbone).__name__}): "
            + "; ".join(parts)
            + ". Train the classifier with the same model.backbone, width and depth (scale) as the detector."
        )
    backbone.load_state_dict(state, strict=True)
    log.info("backbone initialised from %s (%d tensors)", source, len(state))
    return len(state)


def _load_darknet_backbone(backbone: nn.Module, path: Path, darknet_cfg: str | None) -> int:
    """The backbone of a Darknet classifier: its cfg's conv layers but the last (the 1000-way classifier layer,
    read into a throw-away conv) map onto ``backbone`` (bagof.darknet.convert)."""
    from ..darknet.cfg import conv_layers
    from ..darknet.convert import load_darknet

    if not darknet_cfg or not Path(darknet_cfg).is_file():
        raise TransferError(
            f"model.backbone_weights={path} is a Darknet file: model.backbone_darknet_cfg={darknet_cfg!r} must be "
            "its classifier's .cfg (set BAGOF_DARKNET_CFG or model.backbone_darknet_cfg=<path>)"
        )
    last = conv_layers(darknet_cfg)[-1]
    classifier = nn.Module()
    classifier.backbone = backbone
    classifier.fc = nn.Conv2d(last["c_in"], last["filters"], last["size"])
    try:
        load_darknet(classifier, darknet_cfg, path)
    except ValueError as e:
        raise TransferError(f"model.backbone_weights={path}: {e}") from None
    n = len(backbone.state_dict())
    log.info("backbone initialised from %s (Darknet, %s; %d tensors)", path, Path(darknet_cfg).name, n)
    return n
