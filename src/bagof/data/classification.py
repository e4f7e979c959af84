"""Classification data (Tables 2, 3 and the classifiers Table 6 transfers): image folders, the embedded
object-crop set, augmentation, label mixing and the Lightning data module.

Sources (``data.train`` / ``data.val``):
- ``format: folder``: ``<root>/<split>/<class>/<image>`` (the ImageNet / torchvision ImageFolder layout);
  classes are the sorted folder names unless ``classes`` lists them.
- ``format: crops``: the embedded default: every object of the procedural detection set, cropped
  square with some context and saved once as an image folder under ``paths.data_dir``.

Images are decoded once and resized to ``img_size`` x ``img_size`` (kept in RAM when the set fits in
``cache_ram_mb``; otherwise decoded per access with loader workers). Training samples go through the
multi-image steps (``label_mixing.py``), then albumentations: a random resized crop, flip, HSV jitter
(darknet's hue/saturation/exposure) and the blur toggle. A sample is (image, soft label, class index).
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..utils.cachedir import build_once
from .formats import DatasetError, Issues
from .label_mixing import LabelCutMix, LabelMixUp, LabelMosaic
from .loading import read_rgb
from .sampling import EpochSampler, sample_key, sample_rng, seed_transform
from .synthetic import ensure_synthetic
from .transforms import build_cls_transform

log = logging.getLogger(__name__)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CROPS_VERSION = 1


def list_folder(
    root: str | Path, split: str, classes: list[str] | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(file, class index)]) of ``<root>/<split>/<class>/*``."""
    base = Path(root) / split
    if not base.is_dir():
        raise DatasetError(
            f"image folder {base} does not exist: expected <root>/<split>/<class>/<image> "
            "(set data.train.root / data.val.root, or paths.datasets / BAGOF_DATASETS)"
        )
    found = sorted(p.name for p in base.iterdir() if p.is_dir())
    names = list(classes) if classes else found
    missing = [c for c in names if c not in found]
    if missing:
        raise DatasetError(f"{base}: class folders {missing} are missing (found {found})")
    items = [
        (str(f), k) for k, c in enumerate(names) for f in sorted((base / c).iterdir()) if f.suffix.lower() in IMAGE_EXTS
    ]
    if not items:
        raise DatasetError(f"{base}: no images ({', '.join(sorted(IMAGE_EXTS))}) in the class folders")
    return names, items


def ensure_crops(
    root: str | Path, split: str, num_images: int, seed: int, margin: float = 0.15, min_side: int = 12
) -> Path:
    """Crops every object (side >= ``min_side`` px) of the procedural detection split into an image folder
    ``<out>/<split>/<class>/``, once; returns ``<out>``. Each crop is the box grown by ``margin`` per side
    and made square around its centre (clipped to the image), so the shape's outline stays whole."""
    ann_file, image_dir = ensure_synthetic(Path(root) / "synthetic", split, num_images, seed)
    key = hashlib.sha1(json.dumps([CROPS_VERSION, ann_file.parent.name, margin, min_side]).encode()).hexdigest()[:10]
    out = Path(root) / "crops" / f"{split}-{num_images}-seed{seed}-{key}"
    if (out / "done").is_file():
        return out
    build_once(out, "done", lambda folder: _crop(folder, split, ann_file, image_dir, margin, min_side))
    log.info("cropped the objects of %d synthetic %s images into %s (once)", num_images, split, out)
    return out


def _crop(out: Path, split: str, ann_file: Path, image_dir: Path, margin: float, min_side: int) -> None:
    coco = json.loads(ann_file.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    for c in names.values():
        (out / split / c).mkdir(parents=True, exist_ok=True)
    cache: dict[int, np.ndarray] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if min(w, h) < min_side:
            continue
        if a["image_id"] not in cache:
            cache = {a["image_id"]: cv2.imread(str(image_dir / files[a["image_id"]]))}  # annotations come per image
        img = cache[a["image_id"]]
        side = max(w, h) * (1 + 2 * margin)
        cx, cy = x + w / 2, y + h / 2
        x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x2, y2 = int(min(img.shape[1], cx + side / 2)), int(min(img.shape[0], cy + side / 2))
        cv2.imwrite(
            str(out / split / names[a["category_id"]] / f"{a['id']:07d}.jpg"),
            img[y1:y2, x1:x2],
            [cv2.IMWRITE_JPEG_QUALITY, 92],
        )
    (out / "done").write_text("ok")


def load_image_folder(spec: dict) -> tuple[list[str], list[tuple[str, int]]]:
    spec = dict(spec)
    fmt = spec.pop("format", "folder")
    if fmt == "folder":
        return list_folder(spec["root"], spec["split"], spec.get("classes"))
    if fmt == "crops":
        root = ensure_crops(spec["root"], spec["split"], spec["num_images"], spec.get("seed", 0))
        return list_folder(root, spec["split"], spec.get("classes"))
    raise DatasetError(f"data format {fmt!r}: a classification source is `folder` or `crops`")


class ClassificationDataset(Dataset):
    def __init__(
        self,
        items: list[tuple[str, int]],
        num_classes: int,
        img_size: int,
        transform=None,
        cache: bool = False,
        name: str = "data",
        mosaic: LabelMosaic | None = None,
        pairs=(),
    ):
        self.items, self.num_classes, self.img_size = list(items), num_classes, img_size
        self.transform, self.name, self.mosaic, self.pairs = transform, name, mosaic, list(pairs)
        self.seed = torch.initial_seed() % 2**32  # with epoch and index it seeds each sample (sampling.py)
        self.epoch = 0  # for keys without an epoch (a bare index)
        self.issues = Issues()
        self._cache = None
        if cache:
            with ThreadPoolExecutor(2) as pool:
                imgs = list(pool.map(self._decode, (f for f, _ in self.items)))
            keep = [i for i, im in enumerate(imgs) if im is not None]
            for i in set(range(len(imgs))) - set(keep):
                self.issues.warn("corrupt_image", f"{self.items[i][0]} cannot be decoded, skipped")
            self.items, self._cache = [self.items[i] for i in keep], [imgs[i] for i in keep]
            log.info(
                "%s: %d images decoded once and cached in RAM (%.0f MB)",
                name,
                len(keep),
                sum(im.nbytes for im in self._cache) / 2**20,
            )

    def _decode(self, path: str) -> np.ndarray | None:
        img = read_rgb(path)
        if img is None:
            return None
        return cv2.resize(
            img,
            (self.img_size, self.img_size),
            interpolation=cv2.INTER_AREA if img.shape[0] > self.img_size else cv2.INTER_LINEAR,
        )

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image resized to img_size, one-hot label)."""
        img = self._cache[i] if self._cache is not None else self._decode(self.items[i][0])
        if img is None:
            raise DatasetError(f"{self.items[i][0]} cannot be decoded")
        y = np.zeros(self.num_classes, np.float32)
        y[self.items[i][1]] = 1.0
        return img, y

    def __getitem__(self, key):
        i, _, epoch = sample_key(key, self.epoch)
        rng = sample_rng(self.seed, epoch, i)  # every draw of this sample, whichever process makes it

        def partner():
            return self.load(int(rng.integers(0, len(self))))

        try:
            sample = self.load(i)
            if self.mosaic is not None:
                sample = self.mosaic(sample, lambda: [partner() for _ in range(3)], rng)
            for step in self.pairs:
                sample = step(sample, partner, rng)
        except DatasetError as e:
            self.issues.warn("corrupt_image", f"{e}, replaced by the next image")
            return self[((i + 1) % len(self), None, epoch)]
        img, y = sample
        if self.transform is not None:
            seed_transform(self.transform, rng)
            img = self.transform(image=img)["image"]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), torch.from_numpy(y), self.items[i][1]


def collate_labels(batch):
    """Images -> float (B, 3, S, S) in [0, 1]; soft labels (B, K); class indices (B,)."""
    imgs, ys, ks = zip(*batch)
    return torch.stack(imgs).float().div_(255), torch.stack(ys), torch.tensor(ks)


class ClassificationDataModule(L.LightningDataModule):
    """Same knobs as the detection module where they mean the same (``mosaic``, ``mixup``, ``cutmix``,
    ``augment``), so the ``bof`` toggles apply to either task."""

    def __init__(
        self,
        train: dict,
        val: dict,
        num_classes: int,
        img_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
        cache_ram_mb: int = 2048,
        augment: dict | None = None,
        name: str = "data",
        mosaic: float = 0.0,
        mixup: float | dict = 0.0,
        cutmix: float | dict = 0.0,
        multiscale: dict | None = None,
        tune: dict | None = None,
    ):
        super().__init__()
        if multiscale:
            raise DatasetError(
                "data.multiscale (random shapes / DM) is a detector toggle; a classifier trains at data.img_size"
            )
        self.train_spec, self.val_spec = dict(train), dict(val)
        self.num_classes, self.img_size, self.batch_size = num_classes, img_size, batch_size
        self.num_workers, self.cache_ram_mb, self.name = num_workers, cache_ram_mb, name
        self.augment = dict(augment or {})
        self.mosaic = LabelMosaic(mosaic) if mosaic else None
        self.pairs = [
            cls(**(m if isinstance(m, dict) else {"p": m}))
            for cls, m in ((LabelMixUp, mixup), (LabelCutMix, cutmix))
            if (m.get("p", 0) if isinstance(m, dict) else m) > 0
        ]
        self.train_set = self.val_set = None
        self.classes: list[str] = []
        self.issues = Issues()

    def _build(self, spec: dict, split: str, transform=None, train: bool = False) -> ClassificationDataset:
        names, items = load_image_folder(spec)
        if len(names) != self.num_classes:
            raise DatasetError(
                f"data.num_classes={self.num_classes} but the {split} split of {self.name!r} has "
                f"{len(names)} classes ({names[:10]}); set data.num_classes to match"
            )
        if self.classes and names != self.classes:
            raise DatasetError(f"{self.name!r}: train and val class folders differ; they must be the same list")
        self.classes = names
        cache = len(items) * self.img_size**2 * 3 / 2**20 <= self.cache_ram_mb
        ds = ClassificationDataset(
            items,
            self.num_classes,
            self.img_size,
            transform,
            cache,
            f"{self.name}/{split}",
            self.mosaic if train else None,
            self.pairs if train else (),
        )
        self.issues.update(ds.issues)
        return ds

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is None:
            self.val_set = self._build(self.val_spec, "val")
        if stage in (None, "fit") and self.train_set is None:
            augment = build_cls_transform(self.img_size, **self.augment, seed=torch.initial_seed() % 2**32)
            self.train_set = self._build(self.train_spec, "train", augment, train=True)
        for kind, n in sorted(self.issues.items()):
            log.warning("%s: %d x %s (see the data loader's documented bad-input policy)", self.name, n, kind)

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(ds), torch.initial_seed() % 2**32) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=collate_labels,
            drop_last=shuffle and len(ds) > self.batch_size,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)
