"""Training augmentation with albumentations, applied to letterboxed images.

Reference names and defaults (darknet ``[net]``): ``hue`` .1, ``saturation`` 1.5, ``exposure`` 1.5,
flip, and a random scale/translate standing in for Darknet's ``jitter`` crop; ``blur``: probability of
a Gaussian blur (REFERENCE.md "Blur": about half the samples when on).
"""

from __future__ import annotations

import albumentations as A
import cv2

from ..ops.letterbox import PAD_VALUE


def build_train_transform(
    hue: float = 0.1,
    saturation: float = 1.5,
    exposure: float = 1.5,
    flip: float = 0.5,
    scale: float = 0.25,
    translate: float = 0.1,
    min_visibility: float = 0.25,
    blur: float = 0.0,
    seed: int | None = None,
) -> A.Compose:
    """``seed``: albumentations draws from its own generator, not numpy's or Python's global ones, so the
    run's seed must be passed here for a seeded run to see the same augmentations."""
    ops = []
    if scale or translate:
        ops.append(
            A.Affine(
                scale=(1 - scale, 1 + scale),
                translate_percent=(-translate, translate),
                p=1.0,
                border_mode=cv2.BORDER_CONSTANT,
                fill=PAD_VALUE,
            )
        )
    if flip:
        ops.append(A.HorizontalFlip(p=flip))
    if hue or saturation != 1 or exposure != 1:
        ops.append(
            A.ColorJitter(
                brightness=(1 / exposure, exposure),
                contrast=0,
                saturation=(1 / saturation, saturation),
                hue=(-hue, hue),
                p=1.0,
            )
        )
    if blur:
        ops.append(A.GaussianBlur(blur_limit=(3, 7), p=blur))
    return A.Compose(
        ops,
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=min_visibility, min_area=4
        ),
        seed=seed,
    )
