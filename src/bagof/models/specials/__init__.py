"""The Bag-of-Specials modules that sit between the neck and the heads, by name (``model.specials``).

A special is a module registered here under a name with its placement rank, built from the neck's
output channels, the neck's activation and its own options::

    @register_special("sam", rank=30)
    def sam(channels, act, kind="point"):
        return PerLevel(SAM(c, kind) for c in channels)

and switched on by a toggle that adds its options under ``model.specials`` (``conf/bos/sam.yaml``:
``model: {specials: {sam: {kind: point}}}``). Adding one is a module in this package (listed at the end of
this file) and a yaml; the detector builds whatever ``model.specials`` names. Specials apply in rank order
whatever the toggles' order on the command line: ASFF (10) -> RFB (20) -> SAM (30) -> DropBlock (40), our
placement (no reference cfg of the paper's Table 5 variants ships with it).
"""

# every special registers itself on import
from . import asff, dropblock, rfb, sam  # noqa: F401
from .registry import SPECIALS, PerLevel, Special, build_specials, register_special

__all__ = ["SPECIALS", "PerLevel", "Special", "build_specials", "register_special"]
