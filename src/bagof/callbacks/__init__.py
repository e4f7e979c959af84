"""Lightning callbacks that implement training-time features; toggles add them under ``train.callbacks``."""

from .cmbn import CmBN
from .dropblock import DropBlockSchedule
from .ema import EMA
from .sat import SelfAdversarial

__all__ = ["CmBN", "DropBlockSchedule", "EMA", "SelfAdversarial"]
