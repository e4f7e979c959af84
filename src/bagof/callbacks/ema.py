"""EMA: evaluate (and keep) an exponential moving average of the weights, updated after every optimizer step.

Not in the paper: Darknet's YOLOv4 runs had no weight averaging. ScaledYOLOv4 and ultralytics evaluate the
ModelEMA, whose decay ramps up as d(n) = decay * (1 - exp(-n / tau)) after n updates, so early averages
follow the fast-moving weights; BatchNorm's running statistics are averaged too. Lightning's WeightAveraging
does the bookkeeping (the averaged copy, swapping it in for validation, into the model at the end); this
supplies the ramped decay, which Lightning's EMAWeightAveraging (a constant decay) lacks.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.callbacks import WeightAveraging


class EMA(WeightAveraging):
    def __init__(self, decay: float = 0.9999, tau: float = 2000.0):
        if not 0 < decay < 1 or tau <= 0:
            raise ValueError(f"EMA needs 0 < decay < 1 and tau > 0, got decay={decay}, tau={tau}")
        self.decay, self.tau = decay, tau

        def avg_fn(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            d = decay * (1 - math.exp(-int(n) / tau))  # n: updates so far (AveragedModel's n_averaged)
            return d * averaged + (1 - d) * current

        super().__init__(use_buffers=True, avg_fn=avg_fn)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None  # after every optimizer step, never per epoch
