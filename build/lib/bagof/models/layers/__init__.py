from .activations import create_act
from .conv import ConvBNAct, make_divisible
from .spp import SPP

__all__ = ["create_act", "ConvBNAct", "make_divisible", "SPP"]
