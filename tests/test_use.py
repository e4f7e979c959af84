"""Using a trained detector: evaluation without training, prediction, export (ONNX, Darknet), model.weights."""

import json

import numpy as np
import pytest
import torch

from bagof.cli import eval as eval_cli
from bagof.cli import export as export_cli
from bagof.cli import predict as predict_cli
from bagof.errors import BagofError
from bagof.train import fit

SMOKE = ["scale=smoke", "data=synthetic"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run's final checkpoint and the AP its own last evaluation reported (one run for the module)."""
    from hydra import compose, initialize_config_dir

    from bagof.config import CONFIG_DIR

    from .conftest import DARKNET_CFG, DATASETS

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAGOF_ROOT", str(root))
        mp.setenv("BAGOF_DATASETS", str(DATASETS))
        mp.setenv("BAGOF_DARKNET_CFG", str(DARKNET_CFG))
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            result = fit(compose("config", overrides=[*SMOKE, "logger=none"]))
    (ckpt,) = root.glob("outputs/checkpoints/*/last.ckpt")
    return ckpt, result.metrics


def test_eval_of_a_checkpoint_reproduces_the_runs_final_evaluation(compose, trained, tmp_path):
    ckpt, metrics = trained
    again = eval_cli.evaluate(compose([*SMOKE, f"model.weights={ckpt}"]))
    assert again == pytest.approx(metrics, nan_ok=True)
    import mlflow

    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()],
        "tags.`bagof.kind` = 'eval'",
    )
    assert len(runs) == 1 and runs[0].data.metrics["val/AP"] == pytest.approx(metrics["AP"])


def test_predict_writes_one_annotated_image_per_input_and_coco_results(compose, trained, tmp_path):
    import cv2

    ckpt, _ = trained
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"im{i}.jpg"), (np.random.default_rng(i).random((90, 120, 3)) * 255).astype(np.uint8))
    (src / "notes.txt").write_text("not an image")
    compose()  # sets BAGOF_ROOT etc. for the command's own compose
    out = predict_cli.run(str(src), str(tmp_path / "pred"), 0.001, 0.45, [*SMOKE, f"model.weights={ckpt}"])
    assert sorted(p.name for p in out.glob("*.jpg")) == ["im0.jpg", "im1.jpg", "im2.jpg"]
    assert cv2.imread(str(out / "im1.jpg")).shape == (90, 120, 3)
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} <= {"im0", "im1", "im2"}
    assert all(len(r["bbox"]) == 4 and 0 <= r["score"] <= 1 for r in results)
    # the checkpoint names its classes: the synthetic set's shapes, though no data config lists them
    assert {r["category_name"] for r in results} <= {"ellipse", "rectangle", "triangle", "cross", "ring", "star"}


def test_a_checkpoint_carries_its_class_names(compose, trained):
    from bagof.data.synthetic import CLASSES
    from bagof.models.weights import saved_classes

    ckpt, _ = trained
    assert saved_classes(str(ckpt)) == list(CLASSES)
    cfg = compose([*SMOKE, f"model.weights={ckpt}"])
    assert cfg.data.classes is None and predict_cli.class_names(cfg, eval_cli.load_model(cfg)) == list(CLASSES)


def test_predict_on_a_video_writes_one_annotated_frame_per_frame(compose, trained, tmp_path):
    import cv2

    ckpt, _ = trained
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (120, 90))
    for i in range(4):
        writer.write((np.random.default_rng(i).random((90, 120, 3)) * 255).astype(np.uint8))
    writer.release()
    compose()
    out = predict_cli.run(str(video), str(tmp_path / "pred"), 0.001, 0.45, [*SMOKE, f"model.weights={ckpt}"])
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"clip_{i:06d}.jpg" for i in range(4)]
    assert cv2.imread(str(out / "clip_000003.jpg")).shape == (90, 120, 3)
    assert {r["image_id"] for r in json.loads((out / "predictions.json").read_text())} <= {
        f"clip_{i:06d}" for i in range(4)
    }
    with pytest.raises(BagofError, match="no such image, folder or video"):
        predict_cli.run(str(tmp_path / "missing.jpg"), None, 0.25, 0.45, [*SMOKE, f"model.weights={ckpt}"])


def test_weights_of_another_model_are_refused_naming_the_keys(compose, trained):
    ckpt, _ = trained
    cfg = compose([*SMOKE, f"model.weights={ckpt}", "model.backbone=darknet53"])
    with pytest.raises(BagofError, match="does not fit this model"):
        eval_cli.load_model(cfg)
    with pytest.raises(BagofError, match="no such file"):
        eval_cli.load_model(compose([*SMOKE, "model.weights=nowhere.ckpt"]))


def test_onnx_export_matches_torch(compose, trained, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
    ckpt, _ = trained
    cfg = compose([*SMOKE, f"model.weights={ckpt}"])
    model = eval_cli.load_model(cfg)
    diff = export_cli.export_onnx(model, cfg.data.img_size, tmp_path / "m.onnx", ["a", "b"])
    assert diff < 1e-4
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["names"]) == ["a", "b"]  # the class names travel with the file


def test_darknet_export_of_a_network_no_cfg_describes_is_refused(compose, trained, tmp_path, capsys):
    ckpt, _ = trained
    with pytest.raises(SystemExit, match="convolutional layers"):
        export_cli.main(["--format", "darknet", "--out", str(tmp_path / "x.weights"), *SMOKE, f"model.weights={ckpt}"])


def test_model_weights_from_a_darknet_file_start_training(compose, tmp_path):
    """A .weights file (here written from a fresh paper-scale YOLOv4) loads through model.weights."""
    from bagof.darknet.convert import export_darknet

    from .conftest import DARKNET_CFG, need

    cfg_file = need(DARKNET_CFG / "yolov4.cfg")
    cfg = compose(["scale=paper", "data=coco"])
    torch.manual_seed(3)
    import hydra

    src = hydra.utils.instantiate(cfg.model, _convert_="all")
    path = export_darknet(src, cfg_file, tmp_path / "y.weights")
    loaded = eval_cli.load_model(compose(["scale=paper", "data=coco", f"model.weights={path}"]))
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values()):
        if "num_batches_tracked" not in k:
            assert torch.equal(a, b), k


def test_eval_and_predict_run_the_folded_model_in_the_configs_layout(compose, trained):
    ckpt, _ = trained
    cfg = compose([*SMOKE, f"model.weights={ckpt}", "train.channels_last=true"])
    plain, model = eval_cli.load_model(cfg), eval_cli.inference_model(cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # folded into the convolutions
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    x = torch.rand(2, 3, cfg.data.img_size, cfg.data.img_size)
    with torch.inference_mode():
        folded, ref = model.decode(model(x)), plain.decode(plain(x))
    assert torch.allclose(folded, ref, rtol=1e-4, atol=1e-3)


def test_a_run_as_weights_without_logging_is_refused_naming_model_weights(compose):
    cfg = compose([*SMOKE, "model.weights=runs:/" + "0" * 32, "logger=none"])
    with pytest.raises(BagofError, match=r"^model\.weights='runs:/0+': an MLflow run, but logging is off"):
        eval_cli.load_model(cfg)
