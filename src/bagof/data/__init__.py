"""Detection data: format readers (COCO JSON, Pascal VOC XML, YOLO txt), the procedural default
dataset, transforms and the Lightning data module."""

from .detection import DetectionDataModule
from .formats import DatasetError

__all__ = ["DetectionDataModule", "DatasetError"]
