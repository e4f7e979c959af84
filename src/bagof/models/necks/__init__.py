from .yolo_neck import YoloNeck

__all__ = ["YoloNeck"]
