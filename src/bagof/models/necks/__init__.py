from .bifpn import BiFPNNeck
from .yolo_neck import YoloNeck

__all__ = ["BiFPNNeck", "YoloNeck", "build_neck"]


def build_neck(in_channels, channels, kind: str = "pan", spp: bool = True, act: str = "leaky"):
    """``kind``: ``fpn`` (YOLOv3), ``pan`` (YOLOv4), ``bifpn`` (weighted bidirectional)."""
    if kind == "bifpn":
        return BiFPNNeck(in_channels, channels, spp=spp, act=act)
    if kind not in ("fpn", "pan"):
        raise ValueError(f"model.neck={kind!r}: choose fpn (YOLOv3), pan (YOLOv4) or bifpn")
    return YoloNeck(in_channels, channels, kind=kind, spp=spp, act=act)
