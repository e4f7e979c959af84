from .detect import DetectionTask

__all__ = ["DetectionTask"]
