"""Mosaic (REFERENCE.md "M"): four training images cut around a random centre into one.

The centre (cx, cy) is uniform in [0.2, 0.8] of the side (the reference's range). Quadrant k of the
output (top-left, top-right, bottom-left, bottom-right) is a crop of image k of the quadrant's size,
taken at a random position of that (letterboxed) image; each box is shifted with its pixels and cut to
its quadrant, and dropped when less than ``min_side`` pixels of it remain. Applied with probability
``p`` per sample (reference: about half).

Written here rather than with albumentations' ``Mosaic`` because that one builds a 2x canvas and
then crops at a random place, which does not follow the reference's centre range and cut semantics.
"""

from __future__ import annotations

import numpy as np


class Mosaic:
    def __init__(self, p: float = 0.5, center_range: tuple[float, float] = (0.2, 0.8), min_side: float = 2.0):
        self.p, self.center_range, self.min_side = p, tuple(center_range), min_side

    def __call__(self, sample, others, rng: np.random.Generator):
        """``sample`` (image, boxes xyxy, labels), mosaicked with probability p with the three samples that
        ``others()`` draws (the training set's; called only when the mosaic happens)."""
        if rng.random() >= self.p:
            return sample
        return self.combine([sample, *others()], rng)

    def combine(self, samples, rng: np.random.Generator):
        s = samples[0][0].shape[0]
        lo, hi = self.center_range
        cx, cy = (int(round(rng.uniform(lo, hi) * s)) for _ in range(2))
        out = np.empty_like(samples[0][0])
        regions = [(0, 0, cx, cy), (cx, 0, s, cy), (0, cy, cx, s), (cx, cy, s, s)]  # x1, y1, x2, y2
        all_boxes, all_labels = [], []
        for (img, boxes, labels), (x1, y1, x2, y2) in zip(samples, regions):
            w, h = x2 - x1, y2 - y1
            sx, sy = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))  # crop origin in the source
            out[y1:y2, x1:x2] = img[sy : sy + h, sx : sx + w]
            if len(boxes):
                b = boxes.copy()
                b[:, [0, 2]] += x1 - sx
                b[:, [1, 3]] += y1 - sy
                b[:, [0, 2]] = b[:, [0, 2]].clip(x1, x2)
                b[:, [1, 3]] = b[:, [1, 3]].clip(y1, y2)
                keep = ((b[:, 2] - b[:, 0]) >= self.min_side) & ((b[:, 3] - b[:, 1]) >= self.min_side)
                all_boxes.append(b[keep])
                all_labels.append(labels[keep])
        boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
        labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), np.int64)
        return out, boxes.astype(np.float32), labels
