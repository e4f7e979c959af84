"""What every task shares: the optimizer (SGD or AdamW, Darknet's decay of conv weights only) and the
step-wise LR schedule (burn-in, then steps, cosine or poly), built from ``train.optimizer`` / ``train.scheduler``."""

from __future__ import annotations

import math

import lightning as L
import torch

from .schedules import build_lr_lambda


class TrainingTask(L.LightningModule):
    """Subclasses set ``self.model`` and define the steps; ``last_metrics`` holds the latest evaluation."""

    summary_metrics = ("AP", "AP50")  # printed per epoch when evaluated

    def __init__(self, optimizer: dict, scheduler: dict):
        super().__init__()
        self.opt_cfg, self.sched_cfg = dict(optimizer), dict(scheduler)
        self.last_metrics: dict[str, float] = {}
        self.evaluated_now = False  # set when this epoch's validation produced last_metrics

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint carries its class names (``checkpoint["bagof"]["classes"]``), so predict, eval and export
        name what they see without a data config."""
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "class_names", None) or [])
        if names:
            checkpoint.setdefault("bagof", {})["classes"] = names

    def configure_optimizers(self):
        cfg = dict(self.opt_cfg)
        name, wd = cfg.pop("name"), cfg.pop("weight_decay", 0.0)
        # Darknet decays conv weights only; BN parameters and biases are not decayed.
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        # foreach: one C++ loop over the tensors instead of a Python one (torch's default on GPUs, not on the CPU,
        # where the small cpu-scale models' ~220 tensors made AdamW's step ~15 ms of ~220). Its arithmetic is the
        # single-tensor path's, bit for bit (tests/test_schedules.py), so results and the cache are unchanged;
        # fused=True would be faster still but rounds differently.
        if name == "sgd":
            opt = torch.optim.SGD(
                groups,
                lr=cfg["lr"],
                momentum=cfg.get("momentum", 0.9),
                nesterov=cfg.get("nesterov", False),
                foreach=True,
            )
        elif name == "adamw":
            opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg.get("momentum", 0.9), 0.999), foreach=True)
        else:
            raise ValueError(f"train.optimizer.name={name!r}: choose sgd or adamw")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched_cfg = dict(self.sched_cfg)
        burn_in = sched_cfg.pop("burn_in", 0)
        if isinstance(burn_in, float) and burn_in < 1:  # a fraction of training
            burn_in = math.ceil(burn_in * total)
        lam = build_lr_lambda(total_steps=total, burn_in=int(burn_in), **sched_cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
