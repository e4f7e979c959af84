"""Table 4 "CBN": turns the model's BatchNorm layers into CmBN and starts their accumulation window at
every batch (every ``train.accumulate`` mini-batches, where Lightning steps the optimizer)."""

from __future__ import annotations

import logging

import lightning as L

from ..errors import BagofError
from ..models.layers.cmbn import CmBatchNorm2d, check_grad, convert_cmbn, stats_dtype_of

log = logging.getLogger("bagof")


class CmBN(L.Callback):
    def __init__(self, stats_dtype: str = "float32", grad: str = "darknet"):
        stats_dtype_of(stats_dtype)  # a wrong name fails at instantiation, naming the choices
        self.stats_dtype, self.grad = stats_dtype, check_grad(grad)

    def setup(self, trainer, pl_module, stage):
        if trainer.world_size > 1:  # its window spans one process's mini-batches; a global one is not written
            raise BagofError(
                f"CmBN (+bof=cmbn) accumulates statistics over one process's mini-batches and does not run under "
                f"DDP ({trainer.world_size} processes): train on one device (train.devices=1), or use "
                "train.sync_batchnorm=true for BatchNorm over the global batch instead"
            )
        convert_cmbn(pl_module.model, self.stats_dtype, self.grad)
        if trainer.accumulate_grad_batches == 1:
            log.warning(
                "CmBN with train.accumulate=1 is plain BatchNorm: split the batch into mini-batches "
                "(e.g. data.batch_size=4 train.accumulate=2) for it to differ"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % trainer.accumulate_grad_batches == 0:
            for m in pl_module.model.modules():
                if isinstance(m, CmBatchNorm2d):
                    m.reset()
