"""Two-image mixes for the detector (REFERENCE.md "CutMix / MixUp"), applied after Mosaic if both are on.

Each step takes a sample (image, boxes xyxy, labels) and, with probability ``p``, mixes in a second
training sample drawn at random (itself mosaicked when Mosaic is on, as in the reference).
- ``MixUp``: pixel blend ``lam * a + (1 - lam) * b``, both box sets kept (the reference detector's form).
  ``lam`` is 0.5 (reference) or drawn from Beta(alpha, alpha).
- ``CutMix``: a rectangle of the second image (area fraction ~ U(0, 1), the CutMix paper's Beta(1, 1))
  replaces the same rectangle of the first. The reference detector has no CutMix, so box handling is
  ours: the second image's boxes are cut to the patch, the first image's boxes are kept whole, and
  either is dropped when less than ``min_visibility`` of its area remains visible.
"""

from __future__ import annotations

import numpy as np


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)


class MixUp:
    def __init__(self, p: float = 0.5, alpha: float | None = None):
        self.p, self.alpha = p, alpha

    def __call__(self, sample, other, rng: np.random.Generator):
        if rng.random() >= self.p:
            return sample
        (a, ba, la), (b, bb, lb) = sample, other()
        lam = 0.5 if not self.alpha else float(rng.beta(self.alpha, self.alpha))
        img = (lam * a.astype(np.float32) + (1 - lam) * b.astype(np.float32)).round().astype(a.dtype)
        return img, np.concatenate([ba, bb]).astype(np.float32), np.concatenate([la, lb])


class CutMix:
    def __init__(self, p: float = 0.5, min_visibility: float = 0.25):
        self.p, self.min_visibility = p, min_visibility

    def __call__(self, sample, other, rng: np.random.Generator):
        if rng.random() >= self.p:
            return sample
        (a, ba, la), (b, bb, lb) = sample, other()
        h, w = a.shape[:2]
        cut = np.sqrt(rng.uniform(0, 1))  # side ratio of the patch: area fraction ~ U(0, 1)
        pw, ph = int(w * cut), int(h * cut)
        x1, y1 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        x2, y2 = x1 + pw, y1 + ph
        img = a.copy()
        img[y1:y2, x1:x2] = b[y1:y2, x1:x2]
        patch = np.array([[x1, y1, x2, y2]], np.float32)
        inside_b = np.concatenate([np.maximum(bb[:, :2], patch[:, :2]), np.minimum(bb[:, 2:], patch[:, 2:])], 1)
        keep_b = _area(inside_b) >= self.min_visibility * np.maximum(_area(bb), 1e-9)
        covered_a = np.concatenate([np.maximum(ba[:, :2], patch[:, :2]), np.minimum(ba[:, 2:], patch[:, 2:])], 1)
        keep_a = _area(ba) - _area(covered_a) >= self.min_visibility * np.maximum(_area(ba), 1e-9)
        boxes = np.concatenate([ba[keep_a], inside_b[keep_b]]).astype(np.float32)
        return img, boxes, np.concatenate([la[keep_a], lb[keep_b]])
