"""Dataset readers. Every format is read into one canonical form, a cleaned COCO dict
(``images``, ``annotations``, ``categories``), so evaluation always runs pycocotools on the
dataset's own image and category ids.

Bad input policy (README "Bad input"): unreadable or malformed annotation files raise
``DatasetError`` naming the file; bad records are skipped or repaired with a warning, and the
number of each kind is returned in ``Issues`` so the run logs it:

- box with zero or negative width/height: skipped (``degenerate_box``);
- box partly outside the image: clipped (``clipped_box``); entirely outside: skipped;
- unknown class name / category id: skipped (``unknown_class``);
- image file missing: the image is skipped (``missing_image``);
- image without boxes: kept as a negative example (``image_without_boxes``, informational).
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ..errors import BagofError

log = logging.getLogger(__name__)


class DatasetError(BagofError):
    """A dataset file or option is unusable; the message names it and says what to do."""


class Issues(Counter):
    """Counts of skipped/repaired records, by kind; ``warn`` logs the first few of each kind.
    ``unknown_names`` counts the boxes per class name (or number) that is not in the class list."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.unknown_names: Counter = Counter()

    def warn(self, kind: str, message: str, limit: int = 5) -> None:
        self[kind] += 1
        if self[kind] <= limit:
            log.warning("%s: %s", kind, message)


def _clean_box(x1, y1, x2, y2, width, height, where: str, issues: Issues):
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        issues.warn("degenerate_box", f"{where}: box ({x1}, {y1}, {x2}, {y2}) has zero or negative size, skipped")
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:  # nothing left inside; a box under 1 px inside the image is kept, as COCO does
        issues.warn(
            "degenerate_box", f"{where}: box ({x1}, {y1}, {x2}, {y2}) lies outside the {width}x{height} image, skipped"
        )
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        issues.warn("clipped_box", f"{where}: box ({x1}, {y1}, {x2}, {y2}) clipped to the {width}x{height} image")
    return cx1, cy1, cx2, cy2


def load_coco(ann_file: str | Path, image_dir: str | Path) -> tuple[dict, Issues]:
    """Reads a COCO ``instances`` JSON; returns the cleaned dict (with ``file_name`` made absolute)."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file():
        raise DatasetError(f"COCO annotation file not found: {ann_file} (set the data path, e.g. BAGOF_DATASETS=...)")
    try:
        raw = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{ann_file} is not valid JSON ({e}); re-download or regenerate it") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in raw]
    if missing or not isinstance(raw.get("images"), list):
        raise DatasetError(f"{ann_file} is not a COCO instances file: missing {missing or ['images list']}")
    issues = Issues()
    cat_ids = {c["id"] for c in raw["categories"]}
    images, kept_ids = [], set()
    for im in raw["images"]:
        path = image_dir / im["file_name"]
        if not path.is_file():
            issues.warn("missing_image", f"{ann_file}: image {path} not found, skipped")
            continue
        images.append({**im, "file_name": str(path)})
        kept_ids.add(im["id"])
    sizes = {im["id"]: (im["width"], im["height"]) for im in images}
    anns = []
    for a in raw["annotations"]:
        if a.get("image_id") not in kept_ids:
            continue
        where = f"{ann_file} annotation {a.get('id')}"
        if a.get("category_id") not in cat_ids:
            issues.warn("unknown_class", f"{where}: category id {a.get('category_id')} not in categories, skipped")
            continue
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            issues.warn("degenerate_box", f"{where}: malformed bbox {a.get('bbox')!r}, skipped")
            continue
        box = _clean_box(x, y, x + w, y + h, *sizes[a["image_id"]], where, issues)
        if box is None:
            continue
        x1, y1, x2, y2 = box
        anns.append(
            {
                **a,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": a.get("area", (x2 - x1) * (y2 - y1)),
                "iscrowd": a.get("iscrowd", 0),
            }
        )
    with_boxes = {a["image_id"] for a in anns}
    for im in images:
        if im["id"] not in with_boxes:
            issues["image_without_boxes"] += 1
    return {"images": images, "annotations": anns, "categories": raw["categories"]}, issues


ANNOTATION_DIRS = ("Annotations", "annotations", "annots", "xml", "labels_xml")
IMAGE_DIRS = ("JPEGImages", "images", "imgs", "Images", "JPEGImages_all")
SPLIT_LIST = "splits.json"  # a run's artifact: the images of each split, when they were drawn (val_fraction)


def voc_folders(root: str | Path) -> tuple[Path, Path]:
    """(annotation folder, image folder) of a VOC-style export under any of the common names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"VOC dataset folder not found: {root} (set the dataset's path: data.root=DIR for data=voc, "
            "BAGOF_DATASETS or paths.datasets for the bundled sets)"
        )
    ann = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir()), None)
    img = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if ann is None or img is None:
        raise DatasetError(
            f"{root}: a VOC dataset needs an annotation folder ({' / '.join(ANNOTATION_DIRS)}) and an image folder "
            f"({' / '.join(IMAGE_DIRS)}); found {sorted(p.name for p in root.iterdir() if p.is_dir())}"
        )
    return ann, img


def voc_class_names(root: str | Path) -> list[str]:
    """The object names used in a VOC folder's XML files, sorted (for a dataset whose class list is not given)."""
    ann, _ = voc_folders(root)
    names = set()
    for xml in sorted(ann.glob("*.xml")):
        try:
            names.update((o.findtext("name") or "").strip() for o in ET.parse(xml).getroot().iter("object"))
        except ET.ParseError as e:
            raise DatasetError(f"{xml} is not valid XML ({e}); fix or remove it") from None
    names.discard("")
    if not names:
        raise DatasetError(f"{ann}: no <object><name> in any XML file: set data.classes, or check the folder")
    return sorted(names)


def _split_names(split: str) -> list[str]:
    """The file names a split's list may have: ``val`` also matches ``test`` lists and the reverse."""
    other = {"val": ["test"], "test": ["val"]}.get(split, [])
    return [f"{n}{ext}" for n in (split, *other) for ext in (".txt", ".csv", "_labels.csv", "_list.txt")]


def voc_split_file(root: Path, split: str) -> Path | None:
    """The list of a split: a file ``split`` names (absolute or under root), ``ImageSets/Main/<split>.txt``, or a
    list or CSV named after the split (``train.txt``, ``train_labels.csv``, ...) in root or a folder below it."""
    given = Path(split) if Path(split).is_absolute() else root / split
    if Path(split).suffix in (".txt", ".csv") and given.is_file():
        return given
    main = root / "ImageSets" / "Main" / f"{split}.txt"
    if main.is_file():
        return main
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        for name in _split_names(split):
            if (folder / name).is_file():
                return folder / name
    return None


def read_split_file(path: Path) -> list[str]:
    """Image stems from a list (one name or id per line) or a CSV (its ``filename``/``file``/``image`` column, else
    the first), in file order, each once."""
    if path.suffix == ".csv":
        import csv

        rows = list(csv.reader(path.read_text().splitlines()))
        if not rows:
            return []
        head = [h.strip().lower() for h in rows[0]]
        col = next((head.index(k) for k in ("filename", "file", "image", "image_id") if k in head), None)
        body = rows[1:] if col is not None else rows
        names = [r[col or 0].strip() for r in body if r]
    else:
        names = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    return list(dict.fromkeys(Path(n).stem for n in names))


def voc_split(root: str | Path, split: str, val_fraction: float = 0.2, split_seed: int = 0) -> tuple[list[str], str]:
    """(image stems, where they came from) of a split. Without any list for it, the annotated images are split
    once by a seeded draw: ``val_fraction`` of them (``val``/``test``) against the rest (``train``)."""
    root = Path(root)
    ann, _ = voc_folders(root)
    found = voc_split_file(root, split)
    if found is not None:
        return read_split_file(found), str(found)
    lists = [n for n in ("train", "trainval", "val", "test") if voc_split_file(root, n) is not None]
    if lists:
        raise DatasetError(
            f"{root}: no list for the split {split!r} (looked for ImageSets/Main/{split}.txt and "
            f"{', '.join(_split_names(split))}), though lists exist for {lists}: name it with data.<train|val>.split"
        )
    if split not in ("train", "val", "test"):
        raise DatasetError(f"{root}: split {split!r} has no list; without lists the splits are train and val")
    import numpy as np

    stems = sorted(p.stem for p in ann.glob("*.xml"))
    order = np.random.default_rng(split_seed).permutation(len(stems))
    n_val = max(1, round(val_fraction * len(stems)))
    chosen = order[:n_val] if split in ("val", "test") else order[n_val:]
    return [stems[i] for i in sorted(chosen)], f"drawn: data.val_fraction={val_fraction}, seed {split_seed}"


def load_voc(
    root: str | Path, split: str, classes: list[str] | None = None, val_fraction: float = 0.2, split_seed: int = 0
) -> tuple[dict, Issues]:
    """Reads Pascal VOC XML under any common folder names (``voc_folders``), split by a list (``voc_split``).

    Category ids are 1..K in the order of ``classes`` (VOC has no ids); image ids 1..N in split order.
    VOC coordinates are 1-based inclusive pixels: ``xmin - 1`` gives the 0-based box corner.
    """
    root = Path(root)
    ann_dir, img_dir = voc_folders(root)
    ids, source = voc_split(root, split, val_fraction, split_seed)
    split_file = source
    issues = Issues()
    issues.split_source = source
    records = []
    seen = set()
    for stem in ids:
        xml_path = ann_dir / f"{stem}.xml"
        try:
            tree = ET.parse(xml_path).getroot()
        except FileNotFoundError:
            issues.warn("missing_annotation", f"{xml_path} not found, image {stem} skipped")
            continue
        except ET.ParseError as e:
            raise DatasetError(f"{xml_path} is not valid XML ({e}); fix or remove it from {split_file}") from None
        fname = Path(tree.findtext("filename") or f"{stem}.jpg").name
        img_path = img_dir / fname
        if not img_path.is_file() and (img_dir / f"{stem}.jpg").is_file():
            img_path = img_dir / f"{stem}.jpg"  # some exports store a wrong <filename>
        if not img_path.is_file():
            issues.warn("missing_image", f"{xml_path}: image {img_path} not found, skipped")
            continue
        try:
            width = int(float(tree.findtext("size/width")))
            height = int(float(tree.findtext("size/height")))
        except (TypeError, ValueError):
            raise DatasetError(f"{xml_path}: missing or malformed <size>; add width and height") from None
        objs = []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            try:
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                issues.warn("degenerate_box", f"{xml_path}: object {name!r} has a malformed <bndbox>, skipped")
                continue
            if x2 <= x1 or y2 <= y1:  # judged on the file's own numbers, before the 1-based shift
                issues.warn(
                    "degenerate_box",
                    f"{xml_path}: {name!r} box ({x1}, {y1}, {x2}, {y2}) has zero or negative size, skipped",
                )
                continue
            objs.append((name, x1 - 1, y1 - 1, x2, y2, int(obj.findtext("difficult") or 0)))
            seen.add(name)
        records.append((stem, str(img_path), width, height, objs, xml_path))
    if classes is None:
        classes = sorted(seen)
    cat_of = {c: i + 1 for i, c in enumerate(classes)}
    images, anns = [], []
    for img_id, (stem, path, width, height, objs, xml_path) in enumerate(records, 1):
        images.append({"id": img_id, "file_name": path, "width": width, "height": height})
        n_before = len(anns)
        for name, x1, y1, x2, y2, difficult in objs:
            if name not in cat_of:
                issues.warn(
                    "unknown_class", f"{xml_path}: class {name!r} is not in data classes {list(classes)}, skipped"
                )
                issues.unknown_names[name] += 1
                continue
            box = _clean_box(x1, y1, x2, y2, width, height, str(xml_path), issues)
            if box is None:
                continue
            bx1, by1, bx2, by2 = box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat_of[name],
                    "bbox": [bx1, by1, bx2 - bx1, by2 - by1],
                    "area": (bx2 - bx1) * (by2 - by1),
                    "iscrowd": difficult,
                }
            )  # VOC "difficult" behaves like COCO crowd: neither TP nor FP
        if len(anns) == n_before:
            issues["image_without_boxes"] += 1
    categories = [{"id": i, "name": c, "supercategory": "none"} for c, i in cat_of.items()]
    return {"images": images, "annotations": anns, "categories": categories}, issues


def load_yolo(image_dir: str | Path, classes: list[str]) -> tuple[dict, Issues]:
    """Reads YOLO txt labels (``images/x.jpg`` + ``labels/x.txt`` with ``cls cx cy w h`` normalised)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"YOLO image folder not found: {image_dir}")
    label_dir = Path(str(image_dir).replace(f"{os.sep}images", f"{os.sep}labels"))
    issues = Issues()
    images, anns = [], []
    for img_id, path in enumerate(
        sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")), 1
    ):
        from .loading import read_rgb

        im = read_rgb(str(path))
        if im is None:
            issues.warn("corrupt_image", f"{path} is truncated or cannot be decoded, skipped")
            continue
        height, width = im.shape[:2]
        images.append({"id": img_id, "file_name": str(path), "width": width, "height": height})
        label = label_dir / f"{path.stem}.txt"
        if not label.is_file():
            issues["image_without_boxes"] += 1
            continue
        for ln, line in enumerate(label.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            except (ValueError, IndexError):
                raise DatasetError(f"{label}:{ln}: expected 'class cx cy w h', got {line!r}") from None
            if not 0 <= c < len(classes):
                issues.warn("unknown_class", f"{label}:{ln}: class {c} outside 0..{len(classes) - 1}, skipped")
                issues.unknown_names[str(c)] += 1
                continue
            box = _clean_box(
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
                width,
                height,
                f"{label}:{ln}",
                issues,
            )
            if box is None:
                continue
            x1, y1, x2, y2 = box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": categories}, issues
