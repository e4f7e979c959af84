"""DropBlock's linear schedule: the drop probability grows from 0 to its target over ``ramp`` of training."""

from __future__ import annotations

import lightning as L

from ..models.layers.dropblock import DropBlock2d


class DropBlockSchedule(L.Callback):
    def __init__(self, ramp: float = 1.0):
        self.ramp = ramp  # fraction of the optimizer steps over which the probability ramps up

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        total = max(1, int(trainer.estimated_stepping_batches))
        progress = trainer.global_step / max(1.0, self.ramp * total)
        for m in pl_module.model.modules():
            if isinstance(m, DropBlock2d):
                m.progress = progress
