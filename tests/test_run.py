"""End to end through the real configs: compose, train at smoke scale, check MLflow; the CLI forms."""

import os
import subprocess
import sys

import mlflow
import pytest

from bagof.train import train

from .conftest import DATASETS, ROOT


def _runs(tmp_path, experiment):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id]) if exp else []


def test_smoke_run_logs_metrics_params_and_artifacts(compose, tmp_path):
    cfg = compose(["scale=smoke"])
    ap = train(cfg)
    client, runs = _runs(tmp_path, "synthetic")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {
        "val/AP",
        "val/AP50",
        "val/AP75",
        "val/APs",
        "val/APm",
        "val/APl",
        "train/loss_step",
        "train/loss_epoch",
        "train/loss_box",
        "lr-SGD/pg1",
    } <= set(run.data.metrics)
    assert run.data.metrics["val/AP"] == pytest.approx(ap)
    assert run.data.params["model.backbone"] == "cspdarknet53" and run.data.params["loss.box"] == "mse"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "predictions.png", "coco_eval.txt"} <= artifacts
    assert any(a.startswith("last") or a.endswith(".ckpt") or a == "checkpoints" for a in artifacts), artifacts


def test_feature_toggles_compose(compose):
    cfg = compose(["+bof=[mosaic,ciou]"])
    assert cfg.data.mosaic == 0.5 and cfg.loss.box == "ciou" and cfg.loss.box_weight == 0.07
    cfg = compose(["+bos=[fpn,no_spp]", "model=yolov3"])
    assert cfg.model.neck == "fpn" and not cfg.model.spp
    cfg = compose(["model=cspresnext50_panet_spp", "data=bccd"])
    assert cfg.model.backbone == "cspresnext50" and cfg.data.num_classes == 3 and cfg.model.num_classes == 3


def _cli(tmp_path, *args, timeout=600):
    env = dict(
        os.environ,
        BAGOF_ROOT=str(tmp_path),
        BAGOF_DATASETS=str(DATASETS),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
    )
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_multirun_one_run_per_feature(tmp_path):
    """The users' form `python run.py +bof=mosaic,ciou -m`, with `scale=smoke` added (Hydra takes
    overrides before the `-m` flag)."""
    out = _cli(tmp_path, "+bof=mosaic,ciou", "scale=smoke", "-m")
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = _runs(tmp_path, "synthetic")
    assert len(runs) == 2
    by_box = {r.data.params["loss.box"]: r for r in runs}
    assert set(by_box) == {"mse", "ciou"}
    assert by_box["mse"].data.params["data.mosaic"] == "0.5" and by_box["ciou"].data.params["data.mosaic"] == "0.0"
    assert all("val/AP" in r.data.metrics for r in runs)


@pytest.mark.parametrize("override,group", [("data=bccdd", "data"), ("+bof=mosiac", "bof"), ("loss=l1", "loss")])
def test_unknown_config_choice_is_a_clear_error(tmp_path, override, group):
    out = _cli(tmp_path, override, timeout=120)
    assert out.returncode != 0
    assert f"Could not find '{group}/{override.split('=')[1]}'" in out.stderr
    assert f"Available options in '{group}'" in out.stderr
    assert "Traceback" not in out.stderr


def test_nan_loss_stops_with_a_clear_error():
    import torch

    from bagof.models.detector import YoloDetector
    from bagof.ops.anchors import YOLOV3_ANCHORS
    from bagof.tasks import DetectionTask

    class NanLoss(torch.nn.Module):
        def forward(self, outputs, *args):
            return outputs[0].sum() * float("nan"), {}

    model = YoloDetector("darknet53", 2, YOLOV3_ANCHORS, width=0.125, depth=0.33)
    task = DetectionTask(model, NanLoss(), {"name": "sgd", "lr": 0.01}, {"policy": "steps"}, {})
    batch = (torch.zeros(1, 3, 64, 64), torch.zeros(0, 6), [{}])
    with pytest.raises(FloatingPointError, match="training loss is nan at step 0.*train.optimizer.lr"):
        task.training_step(batch, 0)


def test_contradictory_toggles_are_refused(tmp_path):
    out = _cli(tmp_path, "+bof=[giou,ciou]", "scale=smoke", timeout=120)
    assert out.returncode == 2
    assert "error: contradictory feature toggles: ciou and giou both set the box loss" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_dataset_is_a_clear_error(tmp_path):
    env_root = tmp_path / "nowhere"
    out = subprocess.run(
        [sys.executable, "run.py", "data=bccd", "scale=smoke", f"paths.datasets={env_root}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, BAGOF_ROOT=str(tmp_path)),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"VOC dataset folder not found: {env_root}/BCCD (set the dataset's path" in out.stderr


_ALLOC_PATTERN = """
import resource, sys, torch
from bagof.utils.allocator import keep_freed_memory
print(keep_freed_memory())
def step():  # a training step's pattern: many activations of a few MB allocated, then all freed
    xs = [torch.ones(1_000_000 + 1000 * i) for i in range(60)]
    del xs
step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_allocator_keeps_what_a_step_frees(tmp_path):
    """utils/allocator.py: after keep_freed_memory(), a step that frees and reallocates ~250 MB faults almost no
    page in again; glibc's defaults fault it all (~60,000 pages); the user's own glibc tuning is left alone."""

    def faults(**env):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "BAGOF_MALLOC"))}
        out = subprocess.run(
            [sys.executable, "-c", _ALLOC_PATTERN], env=e | env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        tuned, n = out.stdout.split()
        return tuned == "True", float(n)

    tuned, n_tuned = faults()
    default, n_default = faults(BAGOF_MALLOC="default")
    assert tuned and not default
    assert n_default > 20_000 and n_tuned < 0.1 * n_default, (n_tuned, n_default)
    assert faults(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000000")[0] is False
