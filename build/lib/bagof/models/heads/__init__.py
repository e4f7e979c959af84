from .yolo_head import YoloHead

__all__ = ["YoloHead"]
