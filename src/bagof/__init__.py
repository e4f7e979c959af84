"""bagof: YOLOv4 Bag-of-Freebies / Bag-of-Specials ablations as composable Hydra toggles."""

__version__ = "0.2.0"  # bump when a change alters training results (the result cache keys on it)
