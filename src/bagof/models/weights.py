"""``model.weights``: start a detector (or classifier) from saved weights, for training, evaluation, prediction
and export. The source is
- a Darknet ``.weights`` file, read in the layout of ``model.darknet_cfg`` (the paper's released
  yolov4.weights with yolov4.cfg, or a file written by export; bagof.darknet);
- a Lightning checkpoint (``.ckpt``, the ``model.*`` tensors of a bagof run) or a plain ``state_dict``;
- ``runs:/<run id>``: that run's logged checkpoint, which the caller (train.fit, the eval and predict
  commands) fetches to a local file first, so models never talk to MLflow.

Loading is strict: every tensor of the model must come from the source with its shape, else the error names
the keys and shapes that differ.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import BagofError
from .transfer import read_state_dict, run_id_of


class WeightsError(BagofError):
    pass


def load_weights(model: nn.Module, source: str, darknet_cfg: str | None = None) -> nn.Module:
    if run_id_of(source) is not None:
        raise WeightsError(
            f"model.weights={source!r} names an MLflow run: fetch its checkpoint first "
            "(bagof.checkpoints.fetch_run_checkpoint), as train.fit and the eval/predict commands do"
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights={source!r}: no such file (a .weights, .ckpt or state_dict, or runs:/<id>)")
    if path.suffix == ".weights":
        return _load_darknet(model, path, darknet_cfg)
    state = read_state_dict(path, "model.weights", WeightsError)
    if any(k.startswith("model.") for k in state):  # a Lightning checkpoint of a bagof task
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in ours.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"model.weights={source!r} does not fit this model (build it with the run's model/data/scale): "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(shapes)} of another shape {shapes[:3]}"
        )
    model.load_state_dict(state)
    return model


def saved_classes(source: str | None) -> list[str] | None:
    """The class names a bagof checkpoint carries (``checkpoint["bagof"]["classes"]``); None for other files."""
    if not source or not str(source).endswith(".ckpt") or not Path(source).is_file():
        return None
    import torch

    try:
        obj = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not readable as weights only: no names to report (load_weights says what is wrong)
        return None
    names = (obj.get("bagof") or {}).get("classes") if isinstance(obj, dict) else None
    return [str(n) for n in names] if names else None


def _load_darknet(model: nn.Module, path: Path, darknet_cfg: str | None) -> nn.Module:
    from ..darknet.convert import load_darknet

    if not darknet_cfg or not Path(darknet_cfg).is_file():
        raise WeightsError(
            f"model.weights={path} is a Darknet file: it needs the network's .cfg, model.darknet_cfg="
            f"{darknet_cfg!r} is not a file (set BAGOF_DARKNET_CFG or model.darknet_cfg=<path to the .cfg>)"
        )
    try:
        return load_darknet(model, darknet_cfg, path)
    except ValueError as e:
        raise WeightsError(f"model.weights={path}: {e}") from None
