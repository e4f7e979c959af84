import numpy as np
import pytest

from bagof.errors import BagofError
from bagof.ops.anchors import kmeans_anchors
from bagof.train import resolve_config

from .conftest import DATASETS, need


def test_kmeans_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    planted = np.array([[10, 10], [30, 15], [15, 40], [60, 60], [120, 80], [90, 200]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in planted])
    anchors, mean_iou = kmeans_anchors(wh, k=6, seed=1)
    order = np.argsort(planted.prod(1))
    assert anchors == pytest.approx(planted[order], rel=0.03)  # found, sorted by area
    assert mean_iou > 0.9


def test_kmeans_needs_enough_boxes():
    with pytest.raises(ValueError, match="at least 9 boxes"):
        kmeans_anchors(np.ones((3, 2)))


def test_optimized_anchors_toggle_reads_the_generated_file(compose):
    need(DATASETS / "BCCD")
    from omegaconf import OmegaConf

    from bagof.config import CONFIG_DIR

    made = OmegaConf.load(f"{CONFIG_DIR}/anchors/bccd.yaml")
    cfg = compose(["data=bccd", "+bof=optimized_anchors"])
    assert cfg.model.anchors == made.anchors and cfg.model.anchors_size == made.img_size == 256
    areas = [w * h for w, h in cfg.model.anchors]
    assert areas == sorted(areas) and cfg.model.anchors != compose(["data=bccd"]).model.anchors


def test_optimized_anchors_missing_file_is_a_clear_error(compose):
    cfg = compose(["data=coco128", "+bof=optimized_anchors"])
    with pytest.raises(BagofError, match=r"run `make anchors DATA=coco128` first"):
        resolve_config(cfg)
