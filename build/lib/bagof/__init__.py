"""bagof: YOLOv4 Bag-of-Freebies / Bag-of-Specials ablations as composable Hydra toggles."""

__version__ = "0.1.0"
