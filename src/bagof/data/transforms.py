"""Training augmentation with albumentations: the detector's (on letterboxed images, boxes kept in step) and
the classifier's.

Reference names and defaults (darknet ``[net]``): ``hue`` .1, ``saturation`` 1.5, ``exposure`` 1.5,
flip, and a random scale/translate standing in for Darknet's ``jitter`` crop (the classifier: a random
resized crop); ``blur``: probability of a Gaussian blur (REFERENCE.md "Blur": about half the samples when on).
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
    ops += _flip_and_colour(flip, hue, saturation, exposure, blur)
    return A.Compose(
        ops,
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=min_visibility, min_area=4
        ),
        seed=seed,
    )


def build_cls_transform(
    img_size: int,
    crop_scale: tuple[float, float] = (0.25, 1.0),
    hue: float = 0.1,
    saturation: float = 1.5,
    exposure: float = 1.5,
    flip: float = 0.5,
    blur: float = 0.0,
    seed: int | None = None,
    **_detector_only,
) -> A.Compose:
    """Darknet's classifier augmentation in albumentations terms (random crop + resize, flip, HSV);
    detector-only keys of ``data.augment`` (scale, translate) are ignored."""
    ops = [A.RandomResizedCrop(size=(img_size, img_size), scale=tuple(crop_scale), p=1.0)]
    return A.Compose(ops + _flip_and_colour(flip, hue, saturation, exposure, blur), seed=seed)


def _flip_and_colour(flip: float, hue: float, saturation: float, exposure: float, blur: float) -> list:
    """The steps both tasks share, after their geometric one: flip, Darknet's HSV jitter, the blur toggle."""
    ops = []
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
    return ops
