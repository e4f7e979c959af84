from .softmax import SoftmaxCrossEntropy
from .yolo_loss import YoloLoss

__all__ = ["SoftmaxCrossEntropy", "YoloLoss"]
