"""What both data modules share: decoding an image file, with the truncation check."""

from __future__ import annotations

import cv2
import numpy as np


def truncated(data: bytes) -> bool:
    """Whether an encoded JPEG or PNG stops before its end marker. OpenCV decodes such a file without an
    error (libjpeg fills the missing rows with grey and prints a warning without the file's name), so
    a cut-off download would train as a half-grey image; the markers are checked as YOLOv5 does."""
    if data[:2] == b"\xff\xd8":  # JPEG: its EOI marker (FF D9) near the end (some writers append a trailer);
        return b"\xff\xd9" not in data[-1024:]  # entropy-coded data cannot hold FF D9 (FF is stuffed as FF 00)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-16:]
    return False


def read_rgb(path: str) -> np.ndarray | None:
    """Decodes any image as 3-channel RGB (grayscale is replicated, alpha dropped); None if it is missing,
    truncated or cannot be decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0 or truncated(data.tobytes()):
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
