"""Multi-image steps for the classifier (REFERENCE.md "CutMix / MixUp", "M"): images mixed, labels mixed
by the share each image has in the result, so the soft label always sums to one.

A sample is (image HxWx3 uint8, soft label (K,) float32). The detector's versions (``mixing.py``,
``mosaic.py``) keep boxes instead of mixing labels; the parameters (``p``, ``alpha``, the centre range)
and the toggles that set them (``+bof=mixup``, ``cutmix``, ``mosaic``) are the same.
- ``LabelMixUp``: pixel blend ``lam * a + (1 - lam) * b``, label ``lam * ya + (1 - lam) * yb``; ``lam``
  0.5 or drawn from Beta(alpha, alpha) (as the detector's MixUp).
- ``LabelCutMix``: a rectangle of b (area fraction ~ U(0, 1)) pasted over a; the label weights are the
  pasted rectangle's exact pixel share (after rounding to whole pixels), as in the CutMix paper.
- ``LabelMosaic``: four images, each resized into one quadrant around a centre uniform in [0.2, 0.8]
  of the side (the reference's range); label weights are the quadrants' areas. Resizing the whole image
  into its quadrant (rather than cropping, as the detector's Mosaic does) is our choice: a classifier
  sample has one object, which a crop could cut away while its label weight stays.
"""

from __future__ import annotations

import cv2
import numpy as np


def _blend(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    return (lam * a.astype(np.float32) + (1 - lam) * b.astype(np.float32)).round().astype(a.dtype)


class LabelMixUp:
    def __init__(self, p: float = 0.5, alpha: float | None = None):
        self.p, self.alpha = p, alpha

    def __call__(self, sample, other, rng: np.random.Generator):
        if rng.random() >= self.p:
            return sample
        (a, ya), (b, yb) = sample, other()
        lam = 0.5 if not self.alpha else float(rng.beta(self.alpha, self.alpha))
        return _blend(a, b, lam), (lam * ya + (1 - lam) * yb).astype(np.float32)


class LabelCutMix:
    def __init__(self, p: float = 0.5, min_visibility: float | None = None):  # min_visibility: detector only
        self.p = p

    def __call__(self, sample, other, rng: np.random.Generator):
        if rng.random() >= self.p:
            return sample
        (a, ya), (b, yb) = sample, other()
        h, w = a.shape[:2]
        cut = np.sqrt(rng.uniform(0, 1))  # side ratio of the patch: area fraction ~ U(0, 1)
        pw, ph = int(w * cut), int(h * cut)
        x1, y1 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        img = a.copy()
        img[y1 : y1 + ph, x1 : x1 + pw] = b[y1 : y1 + ph, x1 : x1 + pw]
        share = pw * ph / (w * h)
        return img, ((1 - share) * ya + share * yb).astype(np.float32)


class LabelMosaic:
    def __init__(self, p: float = 0.5, center_range: tuple[float, float] = (0.2, 0.8)):
        self.p, self.center_range = p, tuple(center_range)

    def __call__(self, sample, others, rng: np.random.Generator):
        """``others()`` -> three more samples; returns the mosaic (with probability p) or ``sample``."""
        if rng.random() >= self.p:
            return sample
        return self.combine([sample, *others()], rng)

    def combine(self, samples, rng: np.random.Generator):
        h, w = samples[0][0].shape[:2]
        lo, hi = self.center_range
        cx, cy = int(round(rng.uniform(lo, hi) * w)), int(round(rng.uniform(lo, hi) * h))
        out = np.empty_like(samples[0][0])
        label = np.zeros_like(samples[0][1])
        for (img, y), (x1, y1, x2, y2) in zip(
            samples, [(0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h)]
        ):
            if x2 > x1 and y2 > y1:
                out[y1:y2, x1:x2] = cv2.resize(img, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
                label += (x2 - x1) * (y2 - y1) / (w * h) * y
        return out, label.astype(np.float32)
