"""The classification LightningModule (Tables 2, 3): softmax cross-entropy on soft labels, top-1/top-5."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import TrainingTask


class ClassificationTask(TrainingTask):
    summary_metrics = ("top1", "top5")

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: dict, scheduler: dict):
        super().__init__(optimizer, scheduler)
        self.model, self.loss = model, loss
        self._counts = torch.zeros(0)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        imgs, targets, _ = batch
        loss = self.loss(self.model(imgs), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; "
                "lower train.optimizer.lr or raise train.scheduler.burn_in"
            )
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(imgs))
        return loss

    def on_validation_epoch_start(self):
        k = self.model.fc.out_channels
        self._counts = torch.zeros(k, 3, dtype=torch.long)  # per true class: samples, top-1 hits, top-5 hits

    def validation_step(self, batch, batch_idx):
        imgs, _, labels = batch
        logits = self.model(imgs)
        loss = nn.functional.cross_entropy(logits, labels)
        self.log("val/loss", loss, batch_size=len(imgs))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        hit = top == labels.cpu()[:, None]
        for col, h in ((0, torch.ones_like(labels.cpu(), dtype=torch.bool)), (1, hit[:, 0]), (2, hit.any(1))):
            self._counts[:, col] += torch.bincount(labels.cpu()[h], minlength=len(self._counts))

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        n, c1, c5 = self._counts.sum(0).tolist()
        self.last_metrics = {"top1": c1 / max(n, 1), "top5": c5 / max(n, 1)}  # fractions, like AP
        self.evaluated_now = True
        self.log_dict({f"val/{k}": v for k, v in self.last_metrics.items()})

    def write_artifacts(self, folder: Path, datamodule) -> list[Path]:
        """Per-class accuracy of the last evaluation (where a classifier fails, beside its top-1)."""
        names = getattr(datamodule, "classes", None) or [str(i) for i in range(len(self._counts))]
        lines = ["class\timages\ttop1\ttop5"]
        for name, (n, c1, c5) in zip(names, self._counts.tolist()):
            lines.append(f"{name}\t{n}\t{c1 / max(n, 1):.4f}\t{c5 / max(n, 1):.4f}")
        out = folder / "per_class_accuracy.tsv"
        out.write_text("\n".join(lines) + "\n")
        return [out]
