"""bagof: YOLOv4 Bag-of-Freebies / Bag-of-Specials ablations as composable Hydra toggles."""

# Bump when a change alters training results: the result cache keys on it, so every table row retrains.
# 0.3.0: Darknet's centre gradient (loss.xy_grad), letterbox by the actual resize factors, boxes under 1 px
# kept, class-aware NMS with negative coordinates, DIoU-NMS beta 0.6, evaluation of the images seen only.
# 0.4.0: bf16 autocast at cpu scale where native (heads, loss, decoding in float32), the one-exp Mish kernel.
# 0.5.0: the memory layout in the run identity; each run logs its test-set matches and its provenance.
__version__ = "0.5.0"

import os as _os

# albumentations asks PyPI for its latest version at import: a network call per process and a warning on
# offline machines (cluster nodes, the GPU box); the user's own setting wins
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
