from .base import TrainingTask
from .classify import ClassificationTask
from .detect import DetectionTask

__all__ = ["ClassificationTask", "DetectionTask", "TrainingTask"]
