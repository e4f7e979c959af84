"""`make eval ARGS='model.weights=... data=...'` (``python -m bagof.cli.eval [overrides]``): COCO evaluation
of saved weights on the data config's validation split, without training.

``model.weights``: a run's checkpoint (``runs:/<id>``, a ``.ckpt``), or a Darknet ``.weights`` file with
``model.darknet_cfg``; the model, data and scale overrides must describe the network the weights belong to
(the run's own, e.g. ``data=bccd scale=cpu``). Prints AP/AP50/AP75/APs/APm/APl, and with the MLflow logger
logs a run tagged ``bagof.kind=eval`` with those metrics, the config, and pycocotools' summary with the
per-class AP as ``coco_eval.txt``. Predictions run under the config's ``train.precision`` autocast, as the
training run's own evaluation did, so a checkpoint scores what its run reported.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ..config import compose_config, flatten
from ..errors import BagofError
from ..eval import coco_evaluate, to_coco_results
from ..experiments.launch import TAG_KIND
from ..models.fuse import fuse_conv_bn
from ..models.weights import saved_classes
from ..ops.postprocess import detect
from ..train import build_logger, local_weights, resolve_config
from ..utils.precision import autocast_for

log = logging.getLogger("bagof")


def load_model(cfg: DictConfig):
    """The config's model with ``model.weights`` loaded (``runs:/`` fetched first), in eval mode."""
    if not cfg.model.get("weights"):
        raise BagofError("model.weights=<.ckpt | .weights | runs:/<run id>> is required: the weights to use")
    try:
        local = local_weights(cfg)
        model = hydra.utils.instantiate(cfg.model, _convert_="all", **local).eval()
        model.bagof_classes = saved_classes(local.get("weights", cfg.model.weights))  # names the checkpoint carries
        return model
    except Exception as e:  # Hydra wraps the loader's error: show that one, not the wrapper's traceback
        cause = e
        while cause is not None and not isinstance(cause, BagofError):
            cause = cause.__cause__ or cause.__context__
        raise cause or e from None


def inference_model(cfg: DictConfig):
    """``load_model`` as ``eval`` and ``predict`` run it (``for_inference``)."""
    return for_inference(load_model(cfg), cfg)


def for_inference(model, cfg: DictConfig):
    """An eval-mode copy with BatchNorm folded into the convolutions (exact in eval mode, up to rounding;
    models/fuse.py), in the config's memory layout (``train.channels_last``)."""
    model = fuse_conv_bn(model)
    return model.to(memory_format=torch.channels_last) if cfg.train.get("channels_last") else model


def predict(model, imgs: torch.Tensor, metas, post: dict, precision: str) -> list[torch.Tensor]:
    """Detections per image in original-image pixels: (K, 6) [x1, y1, x2, y2, score, class]."""
    with torch.inference_mode(), autocast_for(precision, imgs.device.type):
        return detect(model, imgs, metas, post)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    resolve_config(cfg)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    t0 = time.time()
    model = inference_model(cfg)
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("validate")
    results, seen = [], []
    post = OmegaConf.to_container(cfg.train.postprocess)
    for imgs, _, metas in dm.val_dataloader():
        for d, meta in zip(predict(model, imgs, metas, post, str(cfg.train.precision)), metas):
            seen.append(meta["image_id"])
            results += to_coco_results(d, meta["image_id"], dm.categories)
    metrics, summary = coco_evaluate(dm.val_set.coco, results, seen)
    print(
        f"bagof eval: model.weights={cfg.model.weights} on {cfg.data.name} ({len(seen)} images), "
        f"{time.time() - t0:.0f} s"
    )
    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    logger = build_logger(cfg)
    if logger is not None:
        logger.log_hyperparams(flatten(cfg))
        client, run_id = logger.experiment, logger.run_id
        client.set_tag(run_id, TAG_KIND, "eval")
        logger.log_metrics({f"val/{k}": v for k, v in metrics.items() if v == v})  # NaN: no truth of that size
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "coco_eval.txt").write_text(summary)
            (Path(d) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            for name in ("coco_eval.txt", "config.yaml"):
                client.log_artifact(run_id, str(Path(d) / name))
        logger.finalize("success")
        print(f"  MLflow run {run_id} (experiment {cfg.experiment!r}, tag {TAG_KIND}=eval)")
    return metrics


def main(argv: list[str]) -> None:
    try:
        evaluate(compose_config(argv))
    except BagofError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
