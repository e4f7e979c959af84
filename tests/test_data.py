import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bagof.data.detection import DetectionDataset, collate, read_rgb
from bagof.data.formats import DatasetError, load_coco, load_voc
from bagof.data.mosaic import Mosaic
from bagof.data.sampling import sample_rng
from bagof.data.synthetic import CLASSES, ensure_synthetic

from .conftest import DATASETS, need


def bccd():
    return need(DATASETS / "BCCD")


def test_bccd_voc_parsing_and_its_bad_boxes():
    root = bccd()
    coco, issues = load_voc(root, "trainval", ["RBC", "WBC", "Platelets"])
    test, test_issues = load_voc(root, "test", ["RBC", "WBC", "Platelets"])
    assert len(coco["images"]) == 292 and len(test["images"]) == 72
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    # BCCD ships two boxes with zero or negative size: both skipped, counted
    assert issues["degenerate_box"] + test_issues["degenerate_box"] == 2
    for a in coco["annotations"] + test["annotations"]:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
    first = next(a for a in coco["annotations"] if a["image_id"] == 1)
    assert first["category_id"] == 2 and first["bbox"] == [
        259.0,
        176.0,
        232.0,
        200.0,
    ]  # WBC 260,177..491,376, 1-based inclusive


def test_voc_unknown_class_skipped_with_count():
    coco, issues = load_voc(bccd(), "test", ["RBC", "WBC"])
    assert issues["unknown_class"] > 0
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2}


def _mini_voc(tmp_path, xml: str, image=True):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\n")
    (tmp_path / "Annotations/a.xml").write_text(xml)
    if image:
        cv2.imwrite(str(tmp_path / "JPEGImages/a.jpg"), np.zeros((20, 30, 3), np.uint8))
    return tmp_path


def test_malformed_xml_names_the_file(tmp_path):
    root = _mini_voc(tmp_path, "<annotation><size><width>30</width>")
    with pytest.raises(DatasetError, match=r"a\.xml is not valid XML"):
        load_voc(root, "train", ["x"])


def test_voc_missing_image_outside_box_and_empty_image(tmp_path):
    xml = (
        "<annotation><filename>a.jpg</filename><size><width>30</width><height>20</height></size>"
        "<object><name>x</name><bndbox><xmin>20</xmin><ymin>5</ymin><xmax>40</xmax><ymax>15</ymax></bndbox></object>"
        "<object><name>x</name><bndbox><xmin>35</xmin><ymin>5</ymin><xmax>40</xmax><ymax>15</ymax></bndbox></object>"
        "</annotation>"
    )
    coco, issues = load_voc(_mini_voc(tmp_path, xml), "train", ["x"])
    assert coco["annotations"][0]["bbox"] == [19.0, 4.0, 11.0, 11.0]  # clipped at the right edge
    assert issues["clipped_box"] == 1 and issues["degenerate_box"] == 1  # the second lies outside
    (tmp_path / "JPEGImages/a.jpg").unlink()
    coco, issues = load_voc(tmp_path, "train", ["x"])
    assert coco["images"] == [] and issues["missing_image"] == 1


def test_coco128_keeps_coco_category_ids():
    root = need(DATASETS / "coco128")
    coco, issues = load_coco(root / "annotations/instances_train2017.json", root / "images/train2017")
    ids = [c["id"] for c in coco["categories"]]
    assert len(ids) == 80 and max(ids) == 90  # COCO's ids are not contiguous
    assert len(coco["images"]) == 128
    assert sum(a["iscrowd"] for a in coco["annotations"]) == 10  # kept for the evaluation
    ds = DetectionDataset(coco, 128)
    assert sum(len(b) for b in ds.boxes) == len(coco["annotations"]) - 10  # crowd boxes are not trained on
    cat_90 = ds.cat_index[90]
    assert cat_90 == 79  # contiguous training index of the last category


def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / "ann.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="ann.json is not valid JSON"):
        load_coco(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        load_coco(bad, tmp_path)


def _coco_with(tmp_path, images):
    (tmp_path / "img").mkdir()
    entries, anns = [], []
    for i, (name, arr) in enumerate(images, 1):
        if arr is not None:
            if isinstance(arr, bytes):
                (tmp_path / "img" / name).write_bytes(arr)
            else:
                cv2.imwrite(str(tmp_path / "img" / name), arr)
        entries.append({"id": i, "file_name": name, "width": 32, "height": 32})
        anns.append({"id": i, "image_id": i, "category_id": 7, "bbox": [4, 4, 10, 10], "iscrowd": 0})
    anns.append({"id": 99, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]})  # unknown category
    anns.append({"id": 98, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 5]})  # zero width
    (tmp_path / "ann.json").write_text(
        json.dumps({"images": entries, "annotations": anns, "categories": [{"id": 7, "name": "thing"}]})
    )
    return load_coco(tmp_path / "ann.json", tmp_path / "img")


def test_grayscale_rgba_corrupt_and_missing_images(tmp_path):
    gray = np.full((32, 32), 200, np.uint8)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA
    rgba[..., 3] = 10
    coco, issues = _coco_with(
        tmp_path, [("g.png", gray), ("r.png", rgba), ("bad.jpg", b"not an image"), ("missing.jpg", None)]
    )
    assert issues["missing_image"] == 1 and issues["unknown_class"] == 1 and issues["degenerate_box"] == 1
    assert read_rgb(str(tmp_path / "img/g.png")).shape == (32, 32, 3)
    assert read_rgb(str(tmp_path / "img/r.png"))[0, 0].tolist() == [255, 0, 0]  # alpha dropped, RGB order
    ds = DetectionDataset(coco, 64, cache=True)
    assert len(ds) == 2 and ds.corrupt["corrupt_image"] == 1  # the undecodable file is skipped, counted
    lazy = DetectionDataset(coco, 64, cache=False)
    img, target, meta = lazy[2]  # the corrupt one: replaced by the next image, with a warning
    assert img.shape == (3, 64, 64) and lazy.corrupt["corrupt_image"] == 1


def test_collate_layout():
    a = (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.tensor([[1, 0, 0, 4, 4.0]]), {})
    b = (torch.full((3, 8, 8), 255, dtype=torch.uint8), torch.tensor([[2, 1, 1, 5, 5.0], [0, 2, 2, 3, 3.0]]), {})
    imgs, targets, _ = collate([a, b])
    assert imgs.shape == (2, 3, 8, 8) and imgs.max() == 1.0
    assert targets[:, 0].tolist() == [0, 1, 1] and targets[1].tolist() == [1, 2, 1, 1, 5, 5]


def test_synthetic_dataset_is_deterministic_and_varied(tmp_path):
    ann1, _ = ensure_synthetic(tmp_path / "a", "train", 40, seed=3)
    ann2, img2 = ensure_synthetic(tmp_path / "b", "train", 40, seed=3)
    d1, d2 = json.loads(ann1.read_text()), json.loads(ann2.read_text())
    assert d1 == d2
    assert len(d1["categories"]) == len(CLASSES) >= 6
    areas = np.array([a["area"] for a in d1["annotations"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    ratios = np.array([a["bbox"][2] / a["bbox"][3] for a in d1["annotations"]])
    assert ratios.min() < 0.7 and ratios.max() > 1.4
    assert len({a["category_id"] for a in d1["annotations"]}) == 6
    val, _ = ensure_synthetic(tmp_path / "a", "val", 40, seed=3)
    assert json.loads(val.read_text())["annotations"] != d1["annotations"]  # disjoint splits
    mtime = ann1.stat().st_mtime
    ensure_synthetic(tmp_path / "a", "train", 40, seed=3)
    assert ann1.stat().st_mtime == mtime  # cached: not generated twice


class _Painted:
    """Four 64x64 images, each one box painted in its own colour."""

    def __init__(self):
        self.items = []
        for k in range(4):
            img = np.zeros((64, 64, 3), np.uint8)
            box = np.array([[8 + 4 * k, 10, 40 + 4 * k, 50]], np.float32)
            img[10:50, 8 + 4 * k : 40 + 4 * k] = (60 * (k + 1), 255 - 50 * k, 30 * k)
            self.items.append((img, box, np.array([k])))

    def __len__(self):
        return 4

    def load(self, i):
        return (*self.items[i], None)


def test_mosaic_keeps_each_box_on_its_pixels():
    ds = _Painted()
    rng = np.random.default_rng(0)
    for _ in range(20):
        img, boxes, labels = Mosaic(p=1.0).combine(ds.items, rng)
        assert img.shape == (64, 64, 3) and len(boxes) == len(labels) >= 1
        for (x1, y1, x2, y2), k in zip(boxes.astype(int), labels):
            patch = img[y1:y2, x1:x2].reshape(-1, 3)
            assert (patch == ds.items[k][0][10, 8 + 4 * k]).all()  # every pixel of the box has its colour


def test_mosaic_centre_range_and_probability():
    ds = _Painted()
    rng = np.random.default_rng(1)
    img, _, _ = Mosaic(p=0.0)(ds.items[0], lambda: ds.items[1:], rng)
    assert (img == ds.items[0][0]).all()  # p = 0: the sample itself
    solid = [
        (np.full((100, 100, 3), k, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) for k in range(4)
    ]
    centres = []
    for _ in range(200):
        img, _, _ = Mosaic(p=1.0).combine(solid, rng)
        cx = int((img[0, :, 0] == 0).sum())  # width of the top-left quadrant (image 0)
        cy = int((img[:, 0, 0] == 0).sum())
        assert img[cy:, cx:, 0].min() == 3 and img[:cy, cx:, 0].max() == 1  # quadrants in reading order
        centres += [cx, cy]
    assert 20 <= min(centres) < 30 and 70 < max(centres) <= 80  # uniform over [0.2, 0.8] of the side


def test_yolo_txt_labels(tmp_path):
    from bagof.data.formats import load_yolo

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images/a.jpg"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images/b.jpg"), np.zeros((50, 100, 3), np.uint8))  # no label file: no boxes
    (tmp_path / "labels/a.txt").write_text("1 0.5 0.5 0.2 0.4\n7 0.5 0.5 0.1 0.1\n")
    coco, issues = load_yolo(tmp_path / "images", ["x", "y"])
    assert len(coco["images"]) == 2 and issues["unknown_class"] == 1 and issues["image_without_boxes"] == 1
    assert coco["annotations"][0]["category_id"] == 2
    assert coco["annotations"][0]["bbox"] == pytest.approx([40.0, 15.0, 20.0, 20.0])
    (tmp_path / "labels/a.txt").write_text("1 0.5 oops\n")
    with pytest.raises(DatasetError, match=r"a\.txt:1"):
        load_yolo(tmp_path / "images", ["x", "y"])


def test_mosaic_draws_follow_the_run_seed():
    ds = _Painted()
    coco = {"images": [], "annotations": [], "categories": []}

    def draws(seed):
        torch.manual_seed(seed)
        run_seed = DetectionDataset(coco, 64).seed  # as built after seed_everything
        rng = sample_rng(run_seed, 0, 0)
        return [Mosaic(p=1.0).combine(ds.items, rng)[1].tolist() for _ in range(3)]

    assert draws(5) == draws(5) and draws(5) != draws(6)


def test_augmentations_follow_the_run_seed(compose):
    """albumentations ignores the global seeds: the data module passes the run's seed to it, so two runs
    with the same seed see the same augmented samples (the tables pair rows by seed)."""
    import hydra
    import lightning as L

    def sample(seed):
        L.seed_everything(seed, verbose=False)
        dm = hydra.utils.instantiate(compose(["scale=smoke", "+bof=mosaic"]).data, _convert_="all")
        dm.setup("fit")
        return [dm.train_set[i][0] for i in range(4)]

    a, b, c = sample(3), sample(3), sample(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, z) for x, z in zip(a, c))


@pytest.mark.parametrize("bof", ["mosaic", "dynamic_minibatch"])
def test_a_samples_draws_depend_on_seed_epoch_and_index_alone(compose, bof):
    """Each training sample's augmentation and mixing partners come from (run seed, epoch, index): the batches of an
    epoch are the same made on the training thread or by two loader workers, a sample is the same whatever was
    drawn before it, and the next epoch draws anew."""
    import hydra
    import lightning as L

    def module(workers):
        L.seed_everything(3, verbose=False)
        cfg = compose(["scale=smoke", f"+bof={bof}", f"data.num_workers={workers}"])
        dm = hydra.utils.instantiate(cfg.data, _convert_="all")
        dm.setup("fit")
        return dm

    def epoch(dm, e):
        loader = dm.train_dataloader()
        (loader.batch_sampler if dm.multiscale else loader.sampler).set_epoch(e)
        return [b[0] for b in loader]

    inline, workers = module(0), module(2)
    first = epoch(inline, 0)
    assert all(torch.equal(x, y) for x, y in zip(first, epoch(workers, 0)))
    assert len(first) == len(epoch(workers, 0))
    second = epoch(inline, 1)
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(first, second))
    ds = inline.train_set
    key = (5, None, 1) if not inline.multiscale else (5, inline.img_size, 1)
    alone = ds[key][0]
    for j in range(4):  # other samples drawn in between change nothing
        ds[(j, key[1], 1)]
    assert torch.equal(alone, ds[key][0])


def test_a_split_another_process_completes_meanwhile_is_kept_and_never_written_into(tmp_path, monkeypatch):
    # two sweep jobs (--jobs 2) start on an empty cache: one finishes generating the split while the other is at
    # its first image; no process writes into a folder another has completed (a reader would see half a JPEG)
    from bagof.data import synthetic

    written_into_complete = []
    real_imwrite, real_make = synthetic.cv2.imwrite, synthetic.make_image
    calls = []

    def imwrite(path, img, params):
        written_into_complete.append((Path(path).parent.parent / "annotations.json").is_file())
        return real_imwrite(path, img, params)

    def make_image(seed):
        calls.append(seed)
        if len(calls) == 1:  # the other process runs to completion now
            ensure_synthetic(tmp_path, "val", 3, seed=0)
        return real_make(seed)

    monkeypatch.setattr(synthetic.cv2, "imwrite", imwrite)
    monkeypatch.setattr(synthetic, "make_image", make_image)
    ann, images = ensure_synthetic(tmp_path, "val", 3, seed=0)
    assert not any(written_into_complete) and len(written_into_complete) == 6
    assert len(json.loads(ann.read_text())["images"]) == 3 and len(list(images.glob("*.jpg"))) == 3
    assert [p.name for p in tmp_path.iterdir()] == [ann.parent.name]  # the loser's copy is gone


# ---- a raw dataset in three keys ----------------------------------------------------------------------------


def _module(compose, overrides):
    import hydra

    dm = hydra.utils.instantiate(compose(overrides).data, _convert_="all")
    dm.setup("fit")
    return dm


def test_raccoon_as_shipped_in_three_keys(compose):
    """The raccoon export (flat annotations/ and images/, its split as CSV rows in data/): `data=voc data.root=DIR
    'data.classes=[raccoon]'` finds both folders and the author's split, 160 train and 40 test images."""
    dm = _module(compose, ["data=voc", f"data.root={DATASETS}/raccoon", "data.classes=[raccoon]"])
    assert len(dm.train_set) == 160 and len(dm.val_set) == 40
    assert dm.splits["train"]["source"].endswith("data/train_labels.csv")
    assert dm.splits["val"]["source"].endswith("data/test_labels.csv")  # val falls back to the test list
    assert not set(dm.splits["train"]["images"]) & set(dm.splits["val"]["images"])
    assert dm.categories == [{"id": 1, "name": "raccoon", "supercategory": "none"}]
    cfg = compose(["data=voc", f"data.root={DATASETS}/raccoon", "data.classes=[raccoon]"])
    assert cfg.data.name == "raccoon" and cfg.data.num_classes == 1 and cfg.model.num_classes == 1


def _export(tmp_path, ann="annots", img="imgs", n=10, names=("cat", "dog")):
    """A VOC export with other folder names and no split list."""
    (tmp_path / ann).mkdir(parents=True)
    (tmp_path / img).mkdir()
    for i in range(n):
        cv2.imwrite(str(tmp_path / img / f"p{i}.jpg"), np.full((40, 60, 3), 20 * i, np.uint8))
        name = names[i % len(names)]
        (tmp_path / ann / f"p{i}.xml").write_text(
            f"<annotation><filename>p{i}.jpg</filename><size><width>60</width><height>40</height></size>"
            f"<object><name>{name}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax>"
            "</bndbox></object></annotation>"
        )
    return tmp_path


def test_a_folder_without_lists_is_split_by_a_seeded_draw_and_the_classes_read_from_its_files(
    compose, tmp_path, caplog
):
    root = _export(tmp_path / "pets")
    with caplog.at_level("WARNING"):
        dm = _module(compose, ["data=voc", f"data.root={root}", "data.val_fraction=0.3"])
    assert "'data.classes=[cat,dog]'" in caplog.text  # the names found, and how to fix them
    assert [c["name"] for c in dm.categories] == ["cat", "dog"]
    assert len(dm.val_set) == 3 and len(dm.train_set) == 7
    assert dm.splits["val"]["source"].startswith("drawn: data.val_fraction=0.3")
    again = _module(compose, ["data=voc", f"data.root={root}", "data.val_fraction=0.3", "data.classes=[cat,dog]"])
    assert again.splits["val"]["images"] == dm.splits["val"]["images"]  # the draw is seeded
    other = _module(compose, ["data=voc", f"data.root={root}", "data.val_fraction=0.3", "data.split_seed=1"])
    assert other.splits["val"]["images"] != dm.splits["val"]["images"]


def test_a_named_list_file_and_a_folder_that_is_not_a_dataset(compose, tmp_path):
    from omegaconf.errors import InterpolationResolutionError

    root = _export(tmp_path / "pets", ann="Annotations", img="images")
    (root / "mine.txt").write_text("p1\np2\np3\n")
    (root / "val.txt").write_text("p4.jpg\np5.jpg\n")
    dm = _module(compose, ["data=voc", f"data.root={root}", "data.train.split=mine.txt", "data.classes=[cat,dog]"])
    assert len(dm.train_set) == 3 and len(dm.val_set) == 2
    with pytest.raises(DatasetError, match="no list for the split 'train'.*lists exist for"):
        _module(compose, ["data=voc", f"data.root={root}", "data.classes=[cat,dog]"])
    (tmp_path / "empty").mkdir()
    with pytest.raises((DatasetError, InterpolationResolutionError), match="annotation folder"):
        _module(compose, ["data=voc", f"data.root={tmp_path / 'empty'}"])


def test_an_ultralytics_yolo_folder_in_three_keys(compose, tmp_path):
    root = tmp_path / "shapes"
    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / "images" / split / f"{split}{i}.jpg"), np.full((32, 48, 3), 40 * i, np.uint8))
            (root / "labels" / split / f"{split}{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.5\n")
    dm = _module(compose, ["data=yolo", f"data.root={root}", "data.classes=[cat,dog]"])
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2 and dm.class_names == ["cat", "dog"]
    cfg = compose(["data=yolo", f"data.root={root}", "data.classes=[cat,dog]"])
    assert cfg.data.name == "shapes" and cfg.data.num_classes == 2 and cfg.model.num_classes == 2
