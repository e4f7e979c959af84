"""Softmax cross-entropy for the classifier, on soft labels (mixed by MixUp / CutMix / Mosaic).

Label smoothing follows the reference classifier (REFERENCE.md "LS"): the true class gets 1 - eps and
every other class eps / (K - 1). That is not ``torch.nn.functional.cross_entropy(label_smoothing=eps)``,
which gives the others eps / K (and the true class 1 - eps + eps / K), hence this module. A mixed label
t is smoothed by the same affine map, t (1 - eps) + (1 - t) eps / (K - 1), which still sums to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def softmax_smooth_labels(t: torch.Tensor, eps: float) -> torch.Tensor:
    k = t.shape[-1]
    return t * (1 - eps) + (1 - t) * eps / (k - 1) if eps else t


class SoftmaxCrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of -sum_k t_k log softmax(logits)_k; ``targets`` (B, K) sum to one."""
        t = softmax_smooth_labels(targets.to(logits.dtype), self.label_smoothing)
        return -(t * F.log_softmax(logits, dim=1)).sum(1).mean()
