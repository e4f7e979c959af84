"""Inference-time folding of BatchNorm into the preceding convolution (eval mode only: the running statistics
are constants then). torch's ``fuse_conv_bn_eval`` computes the folded weights; this walks the model."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which every Conv2d directly followed by a BatchNorm2d inside an
    ``nn.Sequential`` (ConvBNAct, Darknet's ``batch_normalize=1`` layer) is one Conv2d with a bias; the outputs
    equal the unfused model's in eval mode up to float rounding."""
    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return fused
