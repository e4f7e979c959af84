"""Classification task (Tables 2-3), classifier BoF, backbone transfer (Table 6), accumulation (Table 7)."""

import textwrap

import hydra
import lightning as L
import mlflow
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bagof.data.classification import ClassificationDataModule, list_folder
from bagof.data.formats import DatasetError
from bagof.data.label_mixing import LabelCutMix, LabelMixUp, LabelMosaic
from bagof.losses import SoftmaxCrossEntropy
from bagof.models.classifier import Classifier
from bagof.models.detector import YoloDetector
from bagof.models.transfer import TransferError
from bagof.train import fit

from .conftest import DATASETS, need

K = 5


def _solid(value: int, k: int, size=40):
    y = np.zeros(K, np.float32)
    y[k] = 1
    return np.full((size, size, 3), value, np.uint8), y


# ---------------------------------------------------------------- label mixing: sums to one, matches the areas
def test_mixup_blends_pixels_and_labels_by_the_same_weight():
    rng = np.random.default_rng(0)
    img, y = LabelMixUp(p=1.0)(_solid(200, 0), lambda: _solid(100, 3), rng)
    assert (img == 150).all() and y.tolist() == [0.5, 0, 0, 0.5, 0]
    img, y = LabelMixUp(p=1.0, alpha=0.4)(_solid(200, 0), lambda: _solid(0, 3), rng)
    lam = img[0, 0, 0] / 200
    assert y[0] == pytest.approx(lam, abs=1 / 200) and y.sum() == pytest.approx(1)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_label_is_the_pasted_pixel_share(seed):
    img, y = LabelCutMix(p=1.0)(_solid(200, 1), lambda: _solid(7, 2), np.random.default_rng(seed))
    share = (img[..., 0] == 7).mean()
    assert y[2] == pytest.approx(share) and y[1] == pytest.approx(1 - share) and y.sum() == pytest.approx(1)


@pytest.mark.parametrize("seed", range(5))
def test_mosaic_label_weights_are_the_quadrant_areas(seed):
    samples = [_solid(v, k) for v, k in ((10, 0), (60, 1), (110, 2), (160, 4))]
    img, y = LabelMosaic(p=1.0).combine(samples, np.random.default_rng(seed))
    for v, k in ((10, 0), (60, 1), (110, 2), (160, 4)):
        assert y[k] == pytest.approx((img[..., 0] == v).mean())
    assert y[3] == 0 and y.sum() == pytest.approx(1)
    cx = (img[0, :, 0] == 10).sum()  # the centre lies in [0.2, 0.8] of the side (reference)
    assert 0.2 * 40 - 1 <= cx <= 0.8 * 40 + 1


def test_softmax_label_smoothing_is_the_reference_form_hand_computed():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    target = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    eps = 0.1
    logp = torch.log_softmax(logits, 1)[0]
    # true class 1 - eps = 0.9, each other eps / (K - 1) = 0.1 / 3 (not torch's eps / K)
    want = -(0.9 * logp[1] + (0.1 / 3) * (logp[0] + logp[2] + logp[3]))
    assert SoftmaxCrossEntropy(eps)(logits, target).item() == pytest.approx(want.item(), rel=1e-6)
    assert SoftmaxCrossEntropy(0.0)(logits, target).item() == pytest.approx(-logp[1].item(), rel=1e-6)
    mixed = torch.tensor([[0.3, 0.7, 0.0, 0.0]])  # a mixed label stays a distribution after smoothing
    from bagof.losses.softmax import softmax_smooth_labels as smooth_labels

    assert smooth_labels(mixed, eps).sum().item() == pytest.approx(1.0)


# ---------------------------------------------------------------- data
def test_image_folder_layout_and_its_errors(tmp_path):
    need(DATASETS / "cifar10-subset")
    names, items = list_folder(DATASETS / "cifar10-subset", "test")
    assert names[:3] == ["airplane", "automobile", "bird"] and len(items) == 2000
    with pytest.raises(DatasetError, match="does not exist"):
        list_folder(tmp_path, "train")
    dm = ClassificationDataModule(
        {"format": "folder", "root": str(DATASETS / "cifar10-subset"), "split": "train"},
        {"format": "folder", "root": str(DATASETS / "cifar10-subset"), "split": "test"},
        num_classes=7,
        img_size=32,
    )
    with pytest.raises(DatasetError, match="data.num_classes=7"):
        dm.setup("fit")


def test_classifier_bof_toggles_reach_the_classification_data(compose):
    cfg = compose(["task=classify", "scale=smoke", "+bof=[mixup,cutmix,mosaic,blur,label_smoothing]"])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert [type(p).__name__ for p in dm.pairs] == ["LabelMixUp", "LabelCutMix"] and dm.mosaic.p == 0.5
    assert cfg.data.augment.blur == 0.5 and cfg.loss.label_smoothing == 0.1
    assert cfg.loss._target_.endswith("SoftmaxCrossEntropy") and cfg.model._target_.endswith("Classifier")
    dm.setup("fit")
    imgs, ys, ks = next(iter(dm.train_dataloader()))
    assert imgs.shape[1:] == (3, 32, 32) and torch.allclose(ys.sum(1), torch.ones(len(ys)))


# ---------------------------------------------------------------- the task, end to end
def test_classifier_smoke_run_logs_top1_top5(compose, tmp_path):
    cfg = compose(["task=classify", "scale=smoke", "+bof=[cutmix,mosaic,label_smoothing]", "+bos=backbone_mish"])
    res = fit(cfg)
    assert set(res.metrics) == {"top1", "top5"} and 0 <= res.metrics["top1"] <= res.metrics["top5"] <= 1
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(res.run_id)
    assert {"val/top1", "val/top5", "train/loss_step"} <= set(run.data.metrics)
    assert run.data.params["model.backbone_act"] == "mish"
    assert "per_class_accuracy.tsv" in {a.path for a in client.list_artifacts(res.run_id)}


# ---------------------------------------------------------------- backbone transfer (Table 6)
def _detector(backbone="cspdarknet53", width=0.125, weights=None):
    return YoloDetector(
        backbone, 3, [[10, 13]] * 9, width=width, depth=0.33, backbone_act="leaky", backbone_weights=weights
    )


def test_backbone_transfer_loads_every_tensor_and_refuses_a_mismatch(tmp_path):
    torch.manual_seed(0)
    cls = Classifier("cspdarknet53", 10, width=0.125, depth=0.33, backbone_act="leaky")
    with torch.no_grad():  # every tensor (BN statistics too) away from any initial value
        for t in cls.state_dict().values():
            t.add_(torch.randn_like(t.float()).to(t.dtype) if t.is_floating_point() else 1)
    ckpt = tmp_path / "cls.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in cls.state_dict().items()}}, ckpt)
    torch.manual_seed(0)
    fresh = _detector().backbone.state_dict()
    torch.manual_seed(0)
    loaded = _detector(weights=str(ckpt)).backbone.state_dict()
    src = cls.backbone.state_dict()
    assert loaded.keys() == src.keys()
    for k, v in loaded.items():
        assert torch.equal(v, src[k]), k
        assert not torch.equal(v, fresh[k]), f"{k} left at its initial value"
    with pytest.raises(TransferError, match="does not match model.backbone"):
        _detector("cspresnext50", weights=str(ckpt))
    with pytest.raises(TransferError, match="shapes differ"):
        _detector(width=0.25, weights=str(ckpt))
    with pytest.raises(TransferError, match="no such file"):
        _detector(weights=str(tmp_path / "nope.ckpt"))


def test_detector_starts_from_a_classifier_logged_in_mlflow(compose, tmp_path):
    """The Table 6 path: a classifier run's checkpoint, named runs:/<id>, initialises the detector."""
    cls_run = fit(compose(["task=classify", "scale=smoke", "model.backbone=cspresnext50"])).run_id
    cfg = compose(["scale=smoke", "model=cspresnext50_panet_spp", f"model.backbone_weights=runs:/{cls_run}"])
    from bagof.checkpoints import fetch_run_checkpoint
    from bagof.models.transfer import backbone_state
    from bagof.train import local_weights

    det = hydra.utils.instantiate(cfg.model, _convert_="all", **local_weights(cfg))  # what fit does
    src = backbone_state(str(fetch_run_checkpoint(f"runs:/{cls_run}", cfg.logger.tracking_uri)))
    assert all(torch.equal(v, src[k]) for k, v in det.backbone.state_dict().items())
    with pytest.raises(TransferError, match="not in the MLflow store"):
        fetch_run_checkpoint("runs:/" + "0" * 32, cfg.logger.tracking_uri)
    with pytest.raises(TransferError, match="fetch its checkpoint first"):  # models never talk to MLflow
        backbone_state(f"runs:/{cls_run}")


# ---------------------------------------------------------------- mini-batch vs batch (Table 7)
class _GradProbe(L.Callback):
    """Grabs the accumulated gradient just before the (single) optimizer step; BN frozen (eval mode)."""

    def __init__(self):
        self.grads = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for m in pl_module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}


def test_accumulating_4x2_gives_the_gradient_of_one_batch_of_8_with_frozen_bn(compose):
    from bagof.data.detection import collate
    from bagof.tasks import DetectionTask

    cfg = compose(["scale=smoke", "data.batch_size=8", "+bof=ciou"])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    samples = [dm.val_set[i] for i in range(8)]  # fixed images and boxes, no augmentation
    grads = []
    for mini, acc in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = hydra.utils.instantiate(cfg.model, _convert_="all")
        loss = hydra.utils.instantiate(cfg.loss)
        task = DetectionTask(
            model, loss, {"name": "sgd", "lr": 0.0, "momentum": 0.0}, {"policy": "steps"}, dict(cfg.train.postprocess)
        )
        probe = _GradProbe()
        trainer = L.Trainer(
            max_steps=1,
            accumulate_grad_batches=acc,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[probe],
        )
        trainer.fit(task, train_dataloaders=DataLoader(samples, batch_size=mini, shuffle=False, collate_fn=collate))
        grads.append(probe.grads)
    one, accumulated = grads
    assert one.keys() == accumulated.keys() and len(one) > 100
    for k in one:
        assert torch.allclose(one[k], accumulated[k], rtol=1e-4, atol=1e-6), k
    assert any(g.abs().sum() > 0 for g in one.values())


def test_batch_and_minibatch_are_separate_settings(compose):
    cfg = compose(["scale=cpu", "data.batch_size=4", "train.accumulate=4"])
    assert cfg.data.batch_size * cfg.train.accumulate == 16


# ---------------------------------------------------------------- Table 6: classifiers pretrained first, cached
def test_table6_style_sweep_pretrains_once_and_shares_it(store):
    from bagof.experiments.__main__ import main

    tmp_path = store
    path = tmp_path / "tablez.yaml"
    path.write_text(
        textwrap.dedent("""\
        title: transfer
        task: detection
        report_scale: smoke
        design: {seeds: 1}
        data: synthetic
        metrics: [AP, AP50]
        baseline: a
        rows:
          - label: a
            overrides: [model=cspresnext50_panet_spp]
            pretrain: {data: crops, overrides: [model.backbone=cspresnext50]}
            paper: {AP: 1.0, AP50: 2.0}
          - label: b
            overrides: [model=cspresnext50_panet_spp, +bof=ciou]
            pretrain: {data: crops, overrides: [model.backbone=cspresnext50]}
            paper: {AP: 1.0, AP50: 2.0}
        """)
    )
    args = ["run", str(path), "--scale", "smoke", "--seeds", "1", "--out", str(tmp_path / "reports")]
    assert main(args) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tablez")
    pre = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'pretrain'")
    rows = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")
    assert len(pre) == 1 and pre[0].info.status == "FINISHED" and "val/top1" in pre[0].data.metrics
    assert len(rows) == 2 and all(r.info.status == "FINISHED" for r in rows)
    assert {r.data.params["model.backbone_weights"] for r in rows} == {f"runs:/{pre[0].info.run_id}"}
    assert main(args) == 0  # rerun: classifier and rows all reused
    assert len(client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'pretrain'")) == 1
    md = (tmp_path / "reports" / "tablez.md").read_text()
    assert md.count("| done |") == 2
    # and the other way round: a classification table's identical row reuses that pretrained classifier
    cls = tmp_path / "tablec.yaml"
    cls.write_text(
        textwrap.dedent("""\
        title: classifiers
        task: classification
        report_scale: smoke
        design: {seeds: 1}
        data: crops
        metrics: [top1, top5]
        baseline: base
        overrides: [model.backbone=cspresnext50]
        rows:
          - label: base
            paper: {top1: 1.0, top5: 2.0}
        """)
    )
    assert main(["run", str(cls), "--scale", "smoke", "--seeds", "1", "--out", str(tmp_path / "reports")]) == 0
    parent = client.search_runs([client.get_experiment_by_name("tablec").experiment_id], "tags.`bagof.kind` = 'table'")[
        0
    ]
    assert parent.data.metrics["trained_runs"] == 0
    assert "| base | 1.0 | 2.0 |" in (tmp_path / "reports" / "tablec.md").read_text()


def test_top1_top5_counting_hand_made():
    from bagof.tasks import ClassificationTask

    class Fixed(torch.nn.Module):  # logits given by the batch itself
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Conv2d(1, 6, 1)

        def forward(self, x):
            return x

    task = ClassificationTask(Fixed(), SoftmaxCrossEntropy(), {"name": "sgd", "lr": 0.1}, {"policy": "steps"})
    task.log = lambda *a, **k: None
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4],  # true 0: top-1 hit
            [9.0, 8, 7, 6, 5, 4],  # true 4: 5th best, a top-5 hit only
            [9.0, 8, 7, 6, 5, 4],  # true 5: last, neither
            [0.0, 1, 0, 0, 0, 0],
        ]
    )  # true 1: top-1 hit
    task.on_validation_epoch_start()
    task.validation_step((logits, None, torch.tensor([0, 4, 5, 1])), 0)
    n, c1, c5 = task._counts.sum(0).tolist()
    assert (n, c1, c5) == (4, 2, 3)
    assert task._counts[4].tolist() == [1, 0, 1] and task._counts[5].tolist() == [1, 0, 0]
