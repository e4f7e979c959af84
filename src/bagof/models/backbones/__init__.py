"""Backbones return feature maps at strides 8, 16, 32 and expose their channels as ``out_channels``."""

from .cspdarknet import CSPDarknet53
from .cspresnext import CSPResNeXt50
from .darknet import Darknet53

BACKBONES = {"cspdarknet53": CSPDarknet53, "cspresnext50": CSPResNeXt50, "darknet53": Darknet53}

__all__ = ["BACKBONES", "CSPDarknet53", "CSPResNeXt50", "Darknet53"]
