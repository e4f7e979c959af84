"""The embedded default dataset: procedural shapes on textured backgrounds, generated on first use.

Six classes: ellipse, rectangle, triangle, cross, ring, star. Shape is what tells them apart; each
class also has a weak colour cue (hues centred 60 degrees apart, jittered by +-50 degrees, so
neighbouring classes overlap and colour alone is ambiguous), which lets a small model start learning
within minutes. Images hold 4 to 14 objects (fewer where
they would overlap too much); sizes are log-uniform from 12 px to 40% of the
image side, so COCO's small / medium / large areas are all present; aspect ratios vary from 1:2 to
2:1; objects may overlap (up to an IoU of 0.2, later shapes occlude earlier ones) and distractor
strokes and blobs clutter the background. Each object's colour differs clearly from the background
under it, so every object is visible (the task is hard for its shapes, not for invisible objects).
Deterministic per seed (each image has its own seed derived from it), written once as COCO JSON +
JPEG under the cache folder and reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from ..utils.cachedir import build_once

log = logging.getLogger(__name__)

CLASSES = ("ellipse", "rectangle", "triangle", "cross", "ring", "star")
VERSION = 5  # bump when the generator changes, so old caches are not reused


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(40, 215, 3)
    low = cv2.resize(
        rng.normal(0, 45, (rng.integers(3, 9), rng.integers(3, 9), 3)), (w, h), interpolation=cv2.INTER_CUBIC
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, freq = rng.uniform(0, math.pi), rng.uniform(0.05, 0.4)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq)[..., None] * rng.uniform(0, 25, 3)
    noise = rng.normal(0, rng.uniform(3, 14), (h, w, 3))
    return np.clip(base + low + stripes + noise, 0, 255).astype(np.uint8)


def _polygon(kind: str, x1, y1, x2, y2, rng) -> np.ndarray:
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if kind == "triangle":
        apex = rng.uniform(x1, x2)
        return np.array([[apex, y1], [x2, y2], [x1, y2]])
    if kind == "star":
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
        pts = (pts - pts.min(0)) / (pts.max(0) - pts.min(0))  # fill the box exactly
        return np.stack([x1 + pts[:, 0] * (x2 - x1), y1 + pts[:, 1] * (y2 - y1)], 1)
    if kind == "cross":
        a, b = rx * 0.35, ry * 0.35
        return np.array(
            [
                [cx - a, y1],
                [cx + a, y1],
                [cx + a, cy - b],
                [x2, cy - b],
                [x2, cy + b],
                [cx + a, cy + b],
                [cx + a, y2],
                [cx - a, y2],
                [cx - a, cy + b],
                [x1, cy + b],
                [x1, cy - b],
                [cx - a, cy - b],
            ]
        )
    raise ValueError(kind)


def _draw(img, kind: str, box, colour, rng) -> None:
    x1, y1, x2, y2 = box
    c = tuple(int(v) for v in colour)
    if kind == "ellipse":
        cv2.ellipse(
            img,
            (round((x1 + x2) / 2), round((y1 + y2) / 2)),
            (round((x2 - x1) / 2), round((y2 - y1) / 2)),
            0,
            0,
            360,
            c,
            -1,
            cv2.LINE_AA,
        )
    elif kind == "ring":
        thick = max(2, round(min(x2 - x1, y2 - y1) * 0.18))
        axes = (max(1, round((x2 - x1 - thick) / 2)), max(1, round((y2 - y1 - thick) / 2)))
        cv2.ellipse(img, (round((x1 + x2) / 2), round((y1 + y2) / 2)), axes, 0, 0, 360, c, thick, cv2.LINE_AA)
    elif kind == "rectangle":
        cv2.rectangle(img, (round(x1), round(y1)), (round(x2) - 1, round(y2) - 1), c, -1)
    else:
        cv2.fillPoly(img, [np.round(_polygon(kind, x1, y1, x2, y2, rng)).astype(np.int32)], c, cv2.LINE_AA)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _class_colour(rng, cls: int, img, box) -> np.ndarray:
    """A colour from the class's hue band that contrasts with the background under the box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    under = img[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)].reshape(-1, 3).mean(0)
    colour = None
    for _ in range(20):
        hue = (cls * 60 + rng.uniform(-50, 50)) % 360
        hsv = np.uint8([[[hue / 2, rng.uniform(128, 255), rng.uniform(60, 255)]]])  # OpenCV hue is 0..179
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
        if np.abs(colour - under).sum() > 150:
            return colour
    return colour


def make_image(seed: int, size_range=(224, 288), n_objects=(4, 14)):
    """One image and its objects [(class index, x1, y1, x2, y2)]."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    img = _background(rng, h, w)
    for _ in range(rng.integers(2, 7)):  # clutter: strokes and blobs that are not objects
        p = rng.integers(0, [w, h], (2, 2))
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        if rng.random() < 0.6:
            cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            cv2.circle(img, tuple(map(int, p[0])), int(rng.integers(2, 6)), colour, -1, cv2.LINE_AA)
    objects = []
    side_max = 0.4 * min(h, w)
    for _ in range(rng.integers(n_objects[0], n_objects[1] + 1)):
        for _attempt in range(10):
            side = math.exp(rng.uniform(math.log(12), math.log(side_max)))
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            bw, bh = side * math.sqrt(aspect), side / math.sqrt(aspect)
            if bw >= w or bh >= h:
                continue
            x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            box = (x1, y1, x1 + bw, y1 + bh)
            if all(_iou(box, o[1:]) < 0.2 for o in objects):
                break
        else:
            continue
        cls = int(rng.integers(len(CLASSES)))
        _draw(img, CLASSES[cls], box, _class_colour(rng, cls, img, box), rng)
        objects.append((cls, *box))
    return img, objects


def ensure_synthetic(root: str | Path, split: str, num_images: int, seed: int) -> tuple[Path, Path]:
    """Generates the split once (COCO JSON + JPEGs) and returns (annotation file, image folder)."""
    key = hashlib.sha1(json.dumps([VERSION, split, num_images, seed]).encode()).hexdigest()[:10]
    out = Path(root) / f"{split}-{num_images}-seed{seed}-{key}"
    if not (out / "annotations.json").is_file():
        log.info("generating %d synthetic %s images into %s (once)", num_images, split, out)
    build_once(out, "annotations.json", lambda folder: _generate(folder, split, num_images, seed))
    return out / "annotations.json", out / "images"


def _generate(out: Path, split: str, num_images: int, seed: int) -> None:
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    # Splits draw from disjoint seed ranges so train and val never share an image.
    offset = {"train": 0, "val": 10_000_000, "test": 20_000_000}.get(split, 30_000_000)
    images, anns = [], []
    for i in range(num_images):
        img, objects = make_image(seed * 100_000_000 + offset + i)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(image_dir / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "width": img.shape[1], "height": img.shape[0]})
        for cls, x1, y1, x2, y2 in objects:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)]
    (out / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
