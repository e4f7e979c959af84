"""Darknet53, the YOLOv3 backbone (darknet-cfg ``yolov3.cfg``): CSPDarknet53's stages (3x3/2 down, then
residual blocks) without the Cross-Stage-Partial connections, leaky ReLU by default."""

from __future__ import annotations

from .cspdarknet import CSPDarknet53


class Darknet53(CSPDarknet53):
    def __init__(self, width: float = 1.0, depth: float = 1.0, act: str = "leaky", miwrc: bool = False):
        super().__init__(width, depth, act, csp=False, miwrc=miwrc)
