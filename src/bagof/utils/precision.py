"""Lightning's ``train.precision`` as a torch autocast context, for the loops that run outside a Trainer
(evaluation, prediction, the benchmarks)."""

from __future__ import annotations

import torch

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast_for(precision: str, device_type: str = "cpu"):
    """The autocast context Lightning's ``precision`` runs a step under (off for 32-true)."""
    dtype = AUTOCAST.get(precision)
    return torch.autocast(device_type, dtype or torch.bfloat16, enabled=dtype is not None)
