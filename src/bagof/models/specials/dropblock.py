"""DropBlock (Ghiasi et al. 2018; REFERENCE.md "DropBlock"): drops block_size x block_size regions.

``drop_prob`` is the target fraction of dropped units; ``DropBlockSchedule`` (the callback below) ramps the
live value linearly from 0 to it over training (the reference ramps keep probability and block size).
The block is clipped to the feature map, since reduced-scale maps can be smaller than 7x7.
Written here because torchvision's ``drop_block2d`` is the only library version and torchvision is not
a dependency of this project.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .registry import PerLevel, register_special


class DropBlock2d(nn.Module):
    def __init__(self, drop_prob: float = 0.1, block_size: int = 7):
        super().__init__()
        self.drop_prob, self.block_size = drop_prob, block_size
        self.progress = 1.0  # fraction of the ramp done; set by the schedule callback

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.drop_prob * min(max(self.progress, 0.0), 1.0)
        if not self.training or p <= 0:
            return x
        h, w = x.shape[2:]
        bs = min(self.block_size, h, w)
        # seed rate gamma so that the expected dropped fraction is p (paper's eq. 1)
        gamma = p * h * w / (bs**2 * (h - bs + 1) * (w - bs + 1))
        valid = torch.zeros(h, w, device=x.device, dtype=torch.bool)
        valid[bs // 2 : h - (bs - 1) // 2, bs // 2 : w - (bs - 1) // 2] = True  # block centres fully inside
        seeds = (torch.rand_like(x) < gamma) & valid
        mask = 1 - F.max_pool2d(seeds.float(), bs, 1, bs // 2)[..., :h, :w]
        return x * mask * (mask.numel() / mask.sum().clamp_min(1.0))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


@register_special("dropblock", rank=40)
def dropblock(channels, act, drop_prob: float = 0.1, block_size: int = 7):
    """DropBlock on each neck output (its probability ramped by DropBlockSchedule)."""
    return PerLevel(DropBlock2d(drop_prob, block_size) for _ in channels)


# Its linear schedule (a Lightning callback, train.callbacks.dropblock: the drop probability grows from 0 to its
# target over ``ramp`` of training).
class DropBlockSchedule(L.Callback):
    def __init__(self, ramp: float = 1.0):
        self.ramp = ramp  # fraction of the optimizer steps over which the probability ramps up

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        total = max(1, int(trainer.estimated_stepping_batches))
        progress = trainer.global_step / max(1.0, self.ramp * total)
        for m in pl_module.model.modules():
            if isinstance(m, DropBlock2d):
                m.progress = progress
