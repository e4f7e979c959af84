"""The detection LightningModule: training loss, validation decoding, COCO evaluation."""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import cv2
import torch
from torch import nn

from ..eval import coco_evaluate, to_coco_results
from ..eval.resample import MATCHES
from ..ops.postprocess import detect
from ..utils.visualize import draw_predictions
from .base import TrainingTask

log = logging.getLogger(__name__)


class DetectionTask(TrainingTask):
    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: dict,
        scheduler: dict,
        postprocess: dict,
        eval_every: int = 1,
    ):
        super().__init__(optimizer, scheduler)
        self.model, self.loss = model, loss
        if getattr(model, "gaussian", False) != getattr(loss, "gaussian", False):
            raise ValueError(
                "model.gaussian and loss.gaussian must agree (the Gaussian YOLO head needs its loss): "
                "use +bos=gaussian, which sets both"
            )
        self.post_cfg = dict(postprocess)
        self.eval_every = eval_every
        self._results: list[dict] = []
        self._seen: list[int] = []
        self.coco_summary = ""
        self.evaluated_now = False

    def forward(self, x):
        return self.model(x)

    def compute_loss(self, imgs: torch.Tensor, targets: torch.Tensor):
        """(total loss, parts) of ``imgs`` against ``targets`` (M, 6) [image, class, x1, y1, x2, y2]."""
        m = self.model
        return self.loss(m(imgs), targets, m.anchors, m.strides, m.scale_x_y)

    def training_step(self, batch, batch_idx):
        imgs, targets, _ = batch
        loss, parts = self.compute_loss(imgs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step} (parts {parts}); "
                "lower train.optimizer.lr or raise train.scheduler.burn_in"
            )
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(imgs))
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, batch_size=len(imgs))
        return loss

    @torch.no_grad()
    def predict_batch(self, imgs, metas) -> list[torch.Tensor]:
        """Detections per image in original-image pixels: (K, 6) [x1, y1, x2, y2, score, class]."""
        return detect(self.model, imgs, metas, self.post_cfg)

    def _evaluating(self) -> bool:
        ep = self.current_epoch + 1
        return self.trainer.sanity_checking is False and (ep % self.eval_every == 0 or ep >= self.trainer.max_epochs)

    def on_validation_epoch_start(self):
        self._results, self._seen = [], []
        self.evaluated_now = False

    def validation_step(self, batch, batch_idx):
        imgs, targets, metas = batch
        if not self._evaluating() and not self.trainer.sanity_checking:
            return
        cats = self.trainer.datamodule.categories
        for d, meta in zip(self.predict_batch(imgs, metas), metas):
            self._seen.append(meta["image_id"])
            self._results.extend(to_coco_results(d.cpu(), meta["image_id"], cats))

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking or not self._evaluating():
            return
        # only the images predicted are scored (train.limit_val_batches may stop before the end of the split)
        metrics, self.coco_summary = coco_evaluate(self.trainer.datamodule.val_set.coco, self._results, self._seen)
        self.last_metrics, self.evaluated_now = metrics, True
        self.log_dict({f"val/{k}": v for k, v in metrics.items() if math.isfinite(v)})  # NaN: no truth of that size

    def write_artifacts(self, folder: Path, datamodule) -> list[Path]:
        """Files logged with the run: predictions drawn on validation images, the COCO evaluation's text."""
        pic = draw_predictions(self, datamodule.val_set)
        out = [folder / "predictions.png"]
        cv2.imwrite(str(out[0]), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
        if self.coco_summary:
            out.append(folder / "coco_eval.txt")
            out[-1].write_text(self.coco_summary)
        if (
            self.coco_summary and self._seen
        ):  # what a report's test-set resampling recomputes AP from (eval/resample.py)
            seen = set(self._seen)
            gt = datamodule.val_set.coco
            data = {
                "gt": {
                    "images": [im for im in gt["images"] if im["id"] in seen],
                    "annotations": [a for a in gt["annotations"] if a["image_id"] in seen],
                    "categories": gt["categories"],
                },
                "detections": self._results,
            }
            out.append(folder / MATCHES)
            out[-1].write_bytes(gzip.compress(json.dumps(data).encode()))
        return out
