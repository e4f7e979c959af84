"""Lightning callbacks that implement training-time features; toggles add them under ``train.callbacks``
(their ``_target_`` names this package). CmBN's and DropBlock's live in their feature's module, with the layer."""

from ..models.layers.cmbn import CmBN
from ..models.specials.dropblock import DropBlockSchedule
from .ema import EMA
from .sat import SelfAdversarial

__all__ = ["CmBN", "DropBlockSchedule", "EMA", "SelfAdversarial"]
