"""Lightning data module over any supported format (see ``formats``) plus the procedural default."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..ops.letterbox import Letterbox, letterbox
from .formats import DatasetError, Issues, load_coco, load_voc, load_yolo, voc_class_names
from .loading import read_rgb
from .mixing import CutMix, MixUp
from .mosaic import Mosaic
from .multiscale import MultiScaleBatchSampler
from .sampling import EpochSampler, sample_key, sample_rng, seed_transform
from .synthetic import ensure_synthetic
from .transforms import build_train_transform

log = logging.getLogger(__name__)


def load_source(spec: dict) -> tuple[dict, Issues]:
    """One split described by config (``format`` plus its paths) -> cleaned COCO dict."""
    fmt = spec.get("format")
    if fmt == "coco":
        return load_coco(spec["ann_file"], spec["image_dir"])
    if fmt == "voc":
        classes = list(spec["classes"]) if spec.get("classes") else None
        return load_voc(spec["root"], spec["split"], classes, spec.get("val_fraction", 0.2), spec.get("split_seed", 0))
    if fmt == "yolo":
        return load_yolo(spec["image_dir"], list(spec["classes"]))
    if fmt == "synthetic":
        ann, images = ensure_synthetic(spec["root"], spec["split"], spec["num_images"], spec["seed"])
        return load_coco(ann, images)
    raise DatasetError(f"data format {fmt!r} is not supported: use coco, voc, yolo or synthetic")


class DetectionDataset(Dataset):
    """Letterboxed images with boxes (xyxy, input pixels) and contiguous class indices.

    ``cache=True`` decodes and letterboxes every image once, up front (two threads), and keeps the
    uint8 result in RAM; otherwise images are decoded per access.
    """

    def __init__(
        self, coco: dict, img_size: int, transform=None, cache: bool = False, name: str = "data", mix=None, pairs=()
    ):
        self.coco, self.img_size, self.transform, self.name = coco, img_size, transform, name
        self.mix = mix  # a multi-image step (e.g. Mosaic) applied before the per-image transform
        self.pairs = list(pairs)  # two-image steps (MixUp, CutMix) applied after it
        # the run's seed (set by seed_everything): with the epoch and the index, it seeds each sample (sampling.py)
        self.seed = torch.initial_seed() % 2**32
        self.epoch = 0  # for keys without an epoch (a bare index)
        self.cat_index = {c["id"]: i for i, c in enumerate(coco["categories"])}
        per_image: dict[int, list] = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            if not a.get("iscrowd", 0):  # crowd regions only matter to the evaluation
                per_image[a["image_id"]].append(a)
        self.images = list(coco["images"])
        self.boxes, self.labels = [], []
        for im in self.images:
            anns = per_image[im["id"]]
            b = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            b[:, 2:] += b[:, :2]
            self.boxes.append(b)
            self.labels.append(np.array([self.cat_index[a["category_id"]] for a in anns], dtype=np.int64))
        self.corrupt = Issues()
        self._cache = None
        if cache:
            self._fill_cache()

    def _fill_cache(self):
        def work(i):
            img = read_rgb(self.images[i]["file_name"])
            return None if img is None else letterbox(img, self.img_size)

        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(work, range(len(self.images))))
        keep = [i for i, d in enumerate(done) if d is not None]
        for i, d in enumerate(done):
            if d is None:
                self.corrupt.warn(
                    "corrupt_image", f"{self.images[i]['file_name']} is truncated or cannot be decoded, skipped"
                )
        self._cache = [done[i] for i in keep]
        if len(keep) < len(done):  # evaluation scores the images kept, not the ground truth of skipped ones
            ids = {self.images[i]["id"] for i in keep}
            self.coco = {
                **self.coco,
                "images": [im for im in self.coco["images"] if im["id"] in ids],
                "annotations": [a for a in self.coco["annotations"] if a["image_id"] in ids],
            }
        self.images = [self.images[i] for i in keep]
        self.boxes = [self.boxes[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        mb = sum(d[0].nbytes for d in self._cache) / 2**20
        log.info("%s: %d images decoded once and cached in RAM (%.0f MB)", self.name, len(self._cache), mb)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Letterbox]:
        """Letterboxed image, its boxes in input pixels, labels, and the letterbox (for mapping back)."""
        if self._cache is not None:
            img, lb = self._cache[i]
        else:
            raw = read_rgb(self.images[i]["file_name"])
            if raw is None:
                raise DatasetError(f"{self.images[i]['file_name']} is truncated or cannot be decoded")
            img, lb = letterbox(raw, self.img_size)
        return img, lb.forward_boxes(self.boxes[i]), self.labels[i], lb

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``i`` through the multi-image steps: (image, boxes, labels), before the transform."""
        img, boxes, labels = self._mixed(i, rng)
        for step in self.pairs:
            img, boxes, labels = step((img, boxes, labels), lambda: self.sample_plain(rng), rng)
        return img, boxes, labels

    def sample_plain(self, rng: np.random.Generator):
        """A random partner for a two-image step (mosaicked when Mosaic is on)."""
        return self._mixed(int(rng.integers(0, len(self))), rng)

    def _mixed(self, i: int, rng: np.random.Generator):
        """Sample ``i`` through the multi-image step (Mosaic), whose partners are three random samples."""
        if self.mix is None:
            return self.load(i)[:3]
        return self.mix(self.load(i)[:3], lambda: [self.load(int(j))[:3] for j in rng.integers(0, len(self), 3)], rng)

    def __getitem__(self, key):
        i, size, epoch = sample_key(key, self.epoch)  # (index, multi-scale size, epoch) from the sampler
        rng = sample_rng(self.seed, epoch, i)  # every draw of this sample, whichever process makes it
        try:
            if self.mix is not None or self.pairs:
                img, boxes, labels = self.sample(i, rng)
                lb = None
            else:
                img, boxes, labels, lb = self.load(i)
        except DatasetError as e:  # lazily read sets: skip an unreadable image, counted in the log
            self.corrupt.warn("corrupt_image", f"{e}, replaced by the next image")
            return self[((i + 1) % len(self), size, epoch)]
        if self.transform is not None:
            seed_transform(self.transform, rng)
            out = self.transform(image=img, bboxes=boxes, labels=labels)
            img = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64)
        if size is not None and size != img.shape[0]:
            boxes = boxes * (size / img.shape[0])
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
            lb = None  # training samples only; their letterbox is not needed
        im = self.images[i]
        meta = {"image_id": im["id"], "width": im["width"], "height": im["height"], "letterbox": lb}
        target = np.concatenate([labels[:, None].astype(np.float32), boxes], 1)
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), torch.from_numpy(target), meta


def collate(batch):
    """Images -> float (B, 3, S, S) in [0, 1]; targets -> (M, 6) [image, class, x1, y1, x2, y2]."""
    imgs, targets, metas = zip(*batch)
    t = [torch.cat([torch.full((len(x), 1), float(i)), x], 1) for i, x in enumerate(targets)]
    return torch.stack(imgs).float().div_(255), torch.cat(t, 0), list(metas)


class DetectionDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: dict,
        val: dict,
        num_classes: int,
        img_size: int = 416,
        batch_size: int = 16,
        num_workers: int = 0,
        cache_ram_mb: int = 2048,
        augment: dict | None = None,
        name: str = "data",
        mosaic: float = 0.0,
        mixup: float | dict = 0.0,
        cutmix: float | dict = 0.0,
        multiscale: dict | None = None,
        tune: dict | None = None,
        classes: list[str] | None = None,
        root: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        train_dir: str | None = None,
        val_dir: str | None = None,
    ):
        # ``tune`` (the GA search's hold-out splits) is read by the GA search (experiments.search) from the config;
        # ``root``, ``val_fraction``, ``split_seed`` (conf/data/voc.yaml), ``train_dir``, ``val_dir`` (yolo.yaml)
        # reach the readers through the splits' specs
        super().__init__()
        self.train_spec, self.val_spec = dict(train), dict(val)
        self.classes = list(classes) if classes else None  # VOC/YOLO: one list for both splits
        if self.classes is None and self.train_spec.get("format") == "voc" and root is not None:
            self.classes = voc_class_names(root)  # conf/data/voc.yaml without data.classes: the files' names
        if self.classes is not None:
            if len(self.classes) != num_classes:
                raise DatasetError(
                    f"data.classes has {len(self.classes)} names {self.classes} but data.num_classes="
                    f"{num_classes}; make them agree"
                )
            for spec in (self.train_spec, self.val_spec):
                if spec.get("format") in ("voc", "yolo"):
                    spec.setdefault("classes", self.classes)
        self.num_classes, self.img_size, self.batch_size = num_classes, img_size, batch_size
        self.num_workers, self.cache_ram_mb, self.name = num_workers, cache_ram_mb, name
        self.augment = dict(augment or {})
        self.mosaic = mosaic
        # two-image mixes: a probability, or the step's keyword arguments (p, alpha, min_visibility)
        self.mixes = [
            cls(**(m if isinstance(m, dict) else {"p": m}))
            for cls, m in ((MixUp, mixup), (CutMix, cutmix))
            if (m.get("p", 0) if isinstance(m, dict) else m) > 0
        ]
        self.multiscale = dict(multiscale) if multiscale else None  # random shapes / DM (see multiscale.py)
        self.train_set = self.val_set = None
        self.issues = Issues()
        self.splits: dict[str, dict] = {}  # split -> where its image list came from, and the images
        self._reported = False

    def _build(self, spec: dict, transform, split: str, mix=None, pairs=()) -> DetectionDataset:
        if spec.get("format") == "yolo" and not spec.get("classes"):
            raise DatasetError(
                f"data={self.name}: YOLO labels hold class numbers only: set data.classes to the "
                "class names, in the labels' order"
            )
        coco, issues = load_source(spec)
        self.issues.update(issues)
        if getattr(issues, "split_source", None):
            self.splits[split] = {
                "source": issues.split_source,
                "images": [Path(im["file_name"]).name for im in coco["images"]],
            }
            log.info("%s/%s: %d images, split from %s", self.name, split, len(coco["images"]), issues.split_source)
        names = [c["name"] for c in coco["categories"]]
        unknown = dict(getattr(issues, "unknown_names", {}))
        if unknown:
            log.warning(
                "%s/%s: %d boxes of classes not in the class list %s were skipped: %s",
                self.name,
                split,
                sum(unknown.values()),
                names,
                dict(sorted(unknown.items())),
            )
        if len(coco["categories"]) != self.num_classes:
            raise DatasetError(
                f"data.num_classes={self.num_classes} but the {split} split of {self.name!r} has "
                f"{len(coco['categories'])} categories {names}; set data.num_classes (and data.classes) "
                "to match the data"
            )
        if not coco["images"]:
            raise DatasetError(f"the {split} split of {self.name!r} has no usable images ({spec})")
        if split == "train" and not coco["annotations"]:
            found = f"; the files name the classes {sorted(unknown)}" if unknown else ""
            raise DatasetError(
                f"the train split of {self.name!r} has no boxes in its {len(coco['images'])} images: "
                f"nothing to learn. The class list is {names}{found}. Check data.classes and the labels "
                f"({spec.get('image_dir') or spec.get('root') or spec.get('ann_file')})"
            )
        cache = len(coco["images"]) * self.img_size**2 * 3 / 2**20 <= self.cache_ram_mb
        ds = DetectionDataset(coco, self.img_size, transform, cache, f"{self.name}/{split}", mix, pairs)
        self.issues.update(ds.corrupt)  # images found corrupt while caching (lazily read sets count them in the log)
        return ds

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is None:
            self.val_set = self._build(self.val_spec, None, "val")
        if stage in (None, "fit") and self.train_set is None:
            mix = Mosaic(self.mosaic) if self.mosaic > 0 else None
            augment = build_train_transform(**self.augment, seed=torch.initial_seed() % 2**32)  # the run's seed
            self.train_set = self._build(self.train_spec, augment, "train", mix, self.mixes)
            names = [c["name"] for c in self.train_set.coco["categories"]]
            if names != [c["name"] for c in self.val_set.coco["categories"]]:
                raise DatasetError(f"{self.name!r}: train and val categories differ; they must be the same list")
        if not self._reported:  # Lightning calls setup again after fit's own call: say it once
            self._reported = True
            for kind, n in sorted(self.issues.items()):
                log.warning("%s: %d x %s (see the data loader's documented bad-input policy)", self.name, n, kind)

    @property
    def categories(self) -> list[dict]:
        return self.val_set.coco["categories"]

    @property
    def class_names(self) -> list[str]:
        """The names of the class indices the model predicts (saved in checkpoints and on the MLflow run)."""
        return [c["name"] for c in self.categories]

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(ds), torch.initial_seed() % 2**32) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=shuffle and len(ds) > self.batch_size,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
        )

    def train_dataloader(self) -> DataLoader:
        if self.multiscale is None:
            return self._loader(self.train_set, True)
        if self.trainer is not None and self.trainer.world_size > 1:
            raise DatasetError(
                "data.multiscale (random shapes / DM) runs on one device for now: its batch sampler "
                "is not split across processes; drop +bof=dynamic_minibatch/random_shapes or use devices=1"
            )
        sampler = MultiScaleBatchSampler(
            len(self.train_set), self.batch_size, self.img_size, seed=torch.initial_seed() % 2**32, **self.multiscale
        )
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)
