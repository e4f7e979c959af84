"""Letterbox resize: keep aspect ratio, pad to a square, and map boxes both ways."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass
class Letterbox:
    """The factors the image was actually resized by (``round(w * s) / w`` and ``round(h * s) / h``,
    not the nominal ``s``: up to half an input pixel apart) and the padding."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def forward_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Original-image xyxy -> network-input xyxy."""
        out = boxes.astype(np.float32).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale_x + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale_y + self.pad_y
        return out

    def inverse_boxes(self, boxes, width: int, height: int):
        """Network-input xyxy -> original-image xyxy, clipped to the image (numpy or torch)."""
        out = boxes.clone() if hasattr(boxes, "clone") else boxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resizes the longer side to ``size`` and centres the image on a ``size`` x ``size`` canvas."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interp)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = image
    return canvas, Letterbox(nw / w, nh / h, pad_x, pad_y)
