"""ASFF, adaptively spatial feature fusion (Liu et al. 2019; REFERENCE.md "ASFF").

After the neck, each output level becomes a per-pixel softmax-weighted sum of all three levels resized
to it: higher-resolution inputs come down through a 3x3/2 conv (with a 3x3/2 max-pool first when two
levels apart), lower-resolution ones go through a 1x1 conv and nearest up-sampling. The weights come
from 1x1 convs compressing each resized input to 8 channels, concatenated, and a 1x1 conv to 3 logits.
A 3x3 conv follows the fusion (as in the ASFF paper).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct
from .registry import register_special


def _resize(c_from: int, c_to: int, steps: int, act: str) -> nn.Module:
    """steps > 0: down-sample 2^steps; steps < 0: up-sample; 0: identity."""
    if steps == 0:
        return nn.Identity()
    if steps > 0:
        pool = [nn.MaxPool2d(3, 2, 1)] * (steps - 1)
        return nn.Sequential(*pool, ConvBNAct(c_from, c_to, 3, 2, act))
    return nn.Sequential(ConvBNAct(c_from, c_to, 1, act=act), nn.Upsample(scale_factor=2 ** (-steps), mode="nearest"))


class ASFFLevel(nn.Module):
    def __init__(self, channels, level: int, act: str = "leaky", compress: int = 8):
        super().__init__()
        c = channels[level]
        self.resize = nn.ModuleList(_resize(cj, c, level - j, act) for j, cj in enumerate(channels))
        self.weight_convs = nn.ModuleList(ConvBNAct(c, compress, 1, act=act) for _ in channels)
        self.weight_logits = nn.Conv2d(compress * len(channels), len(channels), 1)
        self.out = ConvBNAct(c, c, 3, act=act)

    def weights(self, resized) -> torch.Tensor:
        """(B, 3, H, W) softmax fusion weights, summing to one at every pixel."""
        return self.weight_logits(torch.cat([f(x) for f, x in zip(self.weight_convs, resized)], 1)).softmax(1)

    def forward(self, feats):
        resized = [r(x) for r, x in zip(self.resize, feats)]
        w = self.weights(resized)
        return self.out(sum(w[:, i : i + 1] * x for i, x in enumerate(resized)))


class ASFF(nn.Module):
    def __init__(self, channels, act: str = "leaky"):
        super().__init__()
        self.levels = nn.ModuleList(ASFFLevel(channels, i, act) for i in range(len(channels)))

    def forward(self, feats):
        return [level(feats) for level in self.levels]


@register_special("asff", rank=10)
def asff(channels, act):
    """Table 5 "ASFF": the three neck outputs fused per pixel."""
    return ASFF(channels, act)
