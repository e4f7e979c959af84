from .yolo_loss import YoloLoss

__all__ = ["YoloLoss"]
