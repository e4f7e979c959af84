"""Safe with the user's time and results: committed outputs, signals, concurrent invocations, resume,
bad input, and the first-hour friction points (issue 13)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from unittest.mock import MagicMock

import cv2
import mlflow
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bagof.errors import BagofError
from bagof.experiments.__main__ import main as sweeps_main
from bagof.experiments.launch import HOST, PID, TAG_KIND, fail_abandoned, open_store, owner_tags
from bagof.features import check_features

from .conftest import DATASETS, ROOT


def _env(tmp_path, **extra):
    env = dict(
        os.environ,
        BAGOF_ROOT=str(tmp_path),
        BAGOF_DATASETS=str(DATASETS),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
    )
    env.update(extra)
    return env


def _sweep_process(tmp_path, path, **kw):
    """`python -m bagof.experiments run <path> --scale smoke` in its own process, on tmp_path's store."""
    cmd = [sys.executable, "-m", "bagof.experiments", "run", str(path), "--scale", "smoke"]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def _sweep_file(tmp_path, rows: str, name="tables", report_scale="cpu"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        title: safety sweep
        task: detection
        data: synthetic
        report_scale: {report_scale}
        design: {{seeds: 1}}
        metrics: [AP, AP50, AP75]
        baseline: base
        rows:
        """)
        + textwrap.indent(textwrap.dedent(rows), "  ")
    )
    return path


def _row_runs(tmp_path, name):
    # under the store's lock, as the sweep opens it: a bare client on a store the sweep is creating races its
    # schema migration ("table scorers already exists") and the sweep dies before its first run
    client = open_store(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    return client, (client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'") if exp else [])


ONE_ROW = """\
- label: base
  paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
"""


# ---- 1. committed outputs ----------------------------------------------------------------------------------
def test_smoke_table_leaves_the_committed_report_and_its_discussion_alone(store):
    tmp_path = store
    path = _sweep_file(tmp_path, ONE_ROW)
    committed = tmp_path / "reports"
    committed.mkdir()
    (committed / "tables.md").write_text("the committed cpu-scale table\n")
    (committed / "tables.discussion.md").write_text("Discussion of the cpu-scale numbers.\n")
    assert sweeps_main(["run", str(path), "--scale", "smoke"]) == 0
    assert (committed / "tables.md").read_text() == "the committed cpu-scale table\n"
    md = (tmp_path / "outputs" / "reports" / "smoke-synthetic" / "tables.md").read_text()
    assert "**scale**: smoke" in md and "Discussion" not in md
    # naming the committed folder explicitly is refused before anything trains
    assert sweeps_main(["run", str(path), "--scale", "smoke", "--out", str(committed)]) == 2
    assert (committed / "tables.md").read_text() == "the committed cpu-scale table\n"
    # extra overrides are another configuration too: their own folder
    assert sweeps_main(["run", str(path), "--scale", "smoke", "train.max_epochs=1"]) == 0
    assert len(list((tmp_path / "outputs" / "reports").glob("smoke-synthetic-*/tables.md"))) == 1


def test_ga_hyperparameters_are_picked_by_data_and_scale(compose, caplog, monkeypatch):
    from bagof import config

    monkeypatch.setattr(config, "_ga_warned", set())  # the fallback warns once per process
    cfg = compose(["+bof=ga", "data=bccd", "scale=cpu"])
    assert cfg.ga.used == "bccd-cpu"
    with caplog.at_level("WARNING"):
        cfg = compose(["+bof=ga", "scale=smoke"])
        assert cfg.ga.used == "bccd-cpu"  # the fallback, said in a warning naming both files
    assert "no GA search for data=synthetic scale=smoke" in caplog.text and "ga-bccd-cpu.yaml" in caplog.text
    with pytest.raises(Exception, match="ga-nowhere-cpu.yaml"):
        OmegaConf.to_container(compose(["+bof=ga", "ga.hparams=nowhere-cpu"]), resolve=True)


def test_the_ga_toggle_lists_every_key_the_search_tunes():
    from bagof.config import CONFIG_DIR
    from bagof.features import _toggle_keys

    space = OmegaConf.load(f"{CONFIG_DIR}/search/ga.yaml").space
    assert {k for k in _toggle_keys("ga") if not k.startswith("ga.")} == set(space)


# ---- 2. signals ---------------------------------------------------------------------------------------------
LONG_ROWS = """\
    - label: base
      overrides: [train.max_epochs=200, train.limit_train_batches=2]
      paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
    - label: second
      overrides: [train.max_epochs=200, train.limit_train_batches=3]
      paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
    - label: third
      overrides: [train.max_epochs=200, train.limit_train_batches=4]
      paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
    """


def _wait_for(pred, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except Exception:  # the store does not exist yet
            pass
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_sweep_kills_its_run_and_starts_no_other(tmp_path, sig, code):
    path = _sweep_file(tmp_path, LONG_ROWS)
    proc = _sweep_process(tmp_path, path, start_new_session=True)
    # the first job has started (its child run exists, RUNNING) and is under way
    started = _wait_for(lambda: any(r.info.status == "RUNNING" for r in _row_runs(tmp_path, "tables")[1]), 600)
    assert started, "no run started"
    time.sleep(3)
    tree = _descendants(proc.pid)
    assert tree, "the job's worker process is not there"
    t0 = time.time()
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)  # Ctrl-C reaches the group
    out = proc.communicate(timeout=60)[0]
    took = time.time() - t0
    assert proc.returncode == code, out[-3000:]
    assert took < 5, f"took {took:.1f} s to stop"
    left = _survivors(tree, t0 + 5)  # multiprocessing's resource tracker exits once the driver's pipe closes
    assert not left, f"processes of the sweep outlived it by 5 s: {left}"
    _, runs = _row_runs(tmp_path, "tables")
    assert len(runs) == 1, "a run started after the signal"  # child runs are created when their job starts
    assert runs[0].info.status == "KILLED" and "interrupted by" in runs[0].data.tags["error"]
    # no report at the stop (it would hold the exit); the command to write it is printed
    assert "python -m bagof.experiments report" in out and not (tmp_path / "outputs" / "reports").exists()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it is not running)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _survivors(pids: list[int], deadline: float) -> list[str]:
    """The processes of ``pids`` still running at ``deadline`` (waits for it), with their command lines."""
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    out = []
    for p in pids:
        if _alive(p):
            try:
                out.append(f"{p}: " + open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:200])
            except OSError:
                pass
    return out


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _finishes_then_lingers(cfg_yaml, run_id, threads):
    """A job whose run is FINISHED in the store while its process is still tearing down (its result not yet in
    the pipe), with a process of its own still alive, e.g. a compile worker. ``cfg_yaml`` names a file for the
    child's pid."""
    child = subprocess.Popen(["sleep", "600"])
    open(cfg_yaml, "w").write(str(child.pid))
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    client.log_metric(run_id, "val/AP", 0.25)
    client.set_terminated(run_id, "FINISHED")
    time.sleep(600)


def _runs_forever(cfg_yaml, run_id, threads):
    time.sleep(600)


def test_a_stop_keeps_a_run_that_finished_and_kills_only_what_still_runs(tmp_path, monkeypatch):
    """The Ctrl-C race: a job that ended between the signal and the stop keeps FINISHED (and counts); a job
    still training is marked KILLED; every process of both jobs is gone within seconds."""
    from bagof.experiments.launch import WorkerPool, store_lock

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = open_store(uri)
    exp = client.create_experiment("race")
    done, busy = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    pids = tmp_path / "pids"
    finishing = WorkerPool(1, 1, client, lock=store_lock(uri), job=_finishes_then_lingers)
    training = WorkerPool(1, 1, client, lock=store_lock(uri), job=_runs_forever)
    finishing.start("done", str(pids), done)
    training.start("busy", "", busy)
    assert _wait_for(lambda: client.get_run(done).info.status == "FINISHED", 120)
    grandchild = int(pids.read_text())
    t0 = time.time()
    ((key, out),) = finishing.stop("interrupted by SIGINT")
    ((key2, out2),) = training.stop("interrupted by SIGINT")
    assert time.time() - t0 < 5
    assert key == "done" and out["status"] == "FINISHED" and out["metrics"] == {"AP": 0.25}
    assert client.get_run(done).info.status == "FINISHED" and "error" not in client.get_run(done).data.tags
    assert key2 == "busy" and out2["status"] == "KILLED"
    assert client.get_run(busy).info.status == "KILLED"
    assert not _alive(grandchild)  # the job's own child went with it


def test_a_signal_while_a_row_is_composed_stops_the_sweep_not_the_row(monkeypatch):
    """Ctrl-C or SIGTERM can land anywhere, e.g. while a row's config is composed, inside the ``except
    Exception`` that records a broken row as FAILED and goes on: it must still stop the driver."""
    from bagof.experiments import runner
    from bagof.experiments.invocation import Invocation
    from bagof.experiments.launch import Interrupted, interruptible
    from bagof.experiments.spec import load_sweep
    from bagof.experiments.store import Store

    def compose_row(*a):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in the main thread
        time.sleep(1)
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setattr(runner, "compose_row", compose_row)
    monkeypatch.setattr(runner, "backbone_from", lambda *a: None)
    sweep, records = load_sweep(ROOT / "sweeps" / "table4.yaml"), []
    with pytest.raises(Interrupted), interruptible():
        runner._row_jobs(sweep, Invocation("smoke", "bccd", 1), Store(MagicMock(), "0", "0"), records)
    assert not [r for r in records if r["status"] == "FAILED"]


def test_runs_of_dead_invocations_are_marked_failed(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = client.create_run(exp, tags={**owner_tags(), PID: str(dead.pid)})
    alive = client.create_run(exp, tags=owner_tags())
    elsewhere = client.create_run(exp, tags={**owner_tags(), HOST: "another-host"})  # fresh heartbeat: alive
    assert fail_abandoned(client, [exp]) == 1
    assert client.get_run(gone.info.run_id).info.status == "FAILED"
    assert "abandoned" in client.get_run(gone.info.run_id).data.tags["error"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"


# ---- 3. concurrency -----------------------------------------------------------------------------------------
def test_two_sweeps_on_a_new_store_train_each_run_once(tmp_path):
    path = _sweep_file(
        tmp_path,
        ONE_ROW
        + """\
- label: ciou
  bof: [ciou]
  paper: {AP: 39.6, AP50: 59.2, AP75: 42.6}
""",
    )
    assert not (tmp_path / "mlflow.db").exists()
    procs = [_sweep_process(tmp_path, path) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    _, runs = _row_runs(tmp_path, "tables")
    seen = [(r.data.tags["row"], r.info.status, r.data.tags.get("error", "")[:300]) for r in runs]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), seen  # 0 duplicates
    assert sorted(r.data.tags["row"] for r in runs) == ["base", "ciou"]


def test_a_run_that_finishes_while_another_sweep_claims_it_is_reused_not_retrained(tmp_path, monkeypatch):
    """The race CI hit: the other sweep's run turned FINISHED between the claim's two looks at the store (not
    finished yet; no longer running), so the claim trained it again. Whatever the moment of the change, the
    claim must see the run running or finished."""
    from filelock import FileLock

    from bagof.experiments import runner
    from bagof.experiments.runner import Job, claim
    from bagof.experiments.store import Store

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("tables")
    other_parent = client.create_run(exp).info.run_id
    ours = client.create_run(exp).info.run_id
    tags = {"mlflow.parentRunId": other_parent, TAG_KIND: "row", "row": "ciou", "seed": "0"}
    tags |= {"config_hash": "abc", "code_version": runner.CODE_VERSION, **owner_tags()}
    theirs = client.create_run(exp, tags=tags).info.run_id  # the other sweep, alive (this pid), training it
    real = runner.find_row

    def find_row_then_it_finishes(*a, **kw):
        found = real(*a, **kw)
        client.set_terminated(theirs, "FINISHED")  # the other sweep's worker ends its run right now
        return found

    monkeypatch.setattr(runner, "find_row", find_row_then_it_finishes)
    job = Job({"row": "ciou", "seed": 0}, "", "abc", 0)
    decision = claim(Store(client, FileLock(str(tmp_path / "l.lock")), exp, ours), job, force=False)
    assert decision in ("wait", "reuse"), decision
    assert len(client.search_runs([exp], "tags.row = 'ciou'")) == 1  # no second run of it


def test_evolve_sampler_draws_per_trial_number():
    """Two drivers on one study hold different trial numbers, so they never propose the same candidate;
    the same seed and trial number give the same candidate (a search is reproducible)."""
    import optuna
    from optuna.distributions import FloatDistribution

    from bagof.experiments.search.evolve import EvolveSampler

    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "wd": FloatDistribution(0.0, 1.0)}
    storage = optuna.storages.InMemoryStorage()
    a = optuna.create_study(storage=storage, sampler=EvolveSampler(seed=0), study_name="s", direction="maximize")
    b = optuna.load_study(storage=storage, sampler=EvolveSampler(seed=0), study_name="s")  # a second driver
    t0, t1 = a.ask(dists), b.ask(dists)
    assert t0.params != t1.params
    a.tell(t0, 1.0)
    b.tell(t1, 0.5)
    t2, t3 = a.ask(dists), b.ask(dists)  # mutations of a parent: still distinct
    assert t2.params != t3.params
    c = optuna.create_study(sampler=EvolveSampler(seed=0), direction="maximize")
    assert c.ask(dists).params == t0.params


# ---- 4. resume ----------------------------------------------------------------------------------------------
class _Crash(Exception):
    pass


def test_an_interrupted_run_resumes_in_the_same_mlflow_run(compose, tmp_path, monkeypatch):
    from bagof import train as train_mod
    from bagof.utils.console import EpochSummary

    class CrashInSecondEpoch(EpochSummary):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise _Crash("power cut")
            super().on_train_epoch_start(trainer, pl_module)

    overrides = ["scale=smoke", "train.max_epochs=2"]
    monkeypatch.setattr(train_mod, "EpochSummary", CrashInSecondEpoch)
    with pytest.raises(_Crash):
        train_mod.fit(compose(overrides))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert run.info.status == "FAILED"
    folder = tmp_path / "outputs" / "checkpoints" / run.info.run_id
    assert (folder / "last.ckpt").is_file() and (folder / "run.yaml").is_file()
    assert {"last/last.ckpt", "last/run.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id, "last")}
    # another config's checkpoint is refused, naming the key that differs
    with pytest.raises(BagofError, match="train.max_epochs: 2 there, 3 here"):
        train_mod.fit(compose(["scale=smoke", "train.max_epochs=3", f"train.resume={folder / 'last.ckpt'}"]))
    monkeypatch.setattr(train_mod, "EpochSummary", EpochSummary)
    res = train_mod.fit(compose(overrides + ["train.resume=last"]))
    assert res.run_id == run.info.run_id  # the same MLflow run goes on
    (after,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert after.info.status == "FINISHED" and "val/AP" in after.data.metrics
    epochs = [m.value for m in client.get_metric_history(run.info.run_id, "epoch")]
    assert max(epochs) == 1  # epoch 0 from before the crash, epoch 1 after the resume
    assert not folder.exists()  # finished: the checkpoint lives on as the run's artifact
    with pytest.raises(BagofError, match="no checkpoint of this config"):
        train_mod.fit(compose(overrides + ["train.resume=last"]))


def test_unknown_train_key_and_wrong_types_are_config_errors(compose):
    with pytest.raises(BagofError, match=r"train.max_epoch \(did you mean train.max_epochs\?\)"):
        check_features(compose(["+train.max_epoch=3"]))
    with pytest.raises(BagofError, match="train.ckpt_path"):
        check_features(compose(["+train.ckpt_path=/x/last.ckpt"]))
    with pytest.raises(BagofError, match="data.batch_size='four': expected an integer"):
        check_features(compose(["data.batch_size=four"]))
    with pytest.raises(BagofError, match="train.optimizer.lr='fast': expected a number"):
        check_features(compose(["train.optimizer.lr=fast"]))
    # the types come from the config files (no hand-kept table): an integer there stays an integer
    with pytest.raises(BagofError, match="data.batch_size=4.5: expected an integer"):
        check_features(compose(["data.batch_size=4.5"]))
    with pytest.raises(BagofError, match="loss.ignore_thresh='high': expected a number"):
        check_features(compose(["loss.ignore_thresh=high"]))
    check_features(compose(["train.scheduler.burn_in=1000", "model.width=1"]))  # an int where floats are: fine
    import bagof.schema

    assert not hasattr(bagof.schema, "TYPES")


def test_finished_only_after_artifacts(compose, tmp_path):
    from bagof.train import build_logger

    cfg = compose(["scale=smoke"])
    logger = build_logger(cfg)
    logger.log_hyperparams({"a": 1})
    logger.finalize("success")  # what Lightning calls when fit ends: the run stays open for the artifacts
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(logger.run_id).info.status == "RUNNING"
    logger.finalize("failed")
    assert client.get_run(logger.run_id).info.status == "FAILED"


# ---- 5. bad input -------------------------------------------------------------------------------------------
def _voc(tmp_path, objects=("cell",), images=3, truncate=()):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(images):
        stem = f"im{i}"
        stems.append(stem)
        img = np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        ok, enc = cv2.imencode(".jpg", img)
        data = enc.tobytes()
        (tmp_path / "JPEGImages" / f"{stem}.jpg").write_bytes(data[: len(data) // 2] if i in truncate else data)
        objs = "".join(
            f"<object><name>{o}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax>"
            f"<ymax>30</ymax></bndbox></object>"
            for o in objects
        )
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>64</width><height>64</height></size>{objs}"
            "</annotation>"
        )
    for split in ("train", "val"):
        (tmp_path / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems))
    return tmp_path


def _voc_module(root, classes, **kw):
    from bagof.data import DetectionDataModule

    spec = {"format": "voc", "root": str(root)}
    return DetectionDataModule(
        {**spec, "split": "train"},
        {**spec, "split": "val"},
        num_classes=len(classes),
        img_size=64,
        batch_size=2,
        classes=classes,
        **kw,
    )


def test_truncated_jpeg_is_detected_counted_and_skipped(tmp_path):
    dm = _voc_module(_voc(tmp_path, truncate=(1,)), ["cell"])
    dm.setup("fit")
    assert dm.issues["corrupt_image"] == 2  # once in each split (the same files)
    assert len(dm.train_set) == 2 and len(dm.val_set.coco["images"]) == 2  # evaluation scores what is kept
    assert all(a["image_id"] != 2 for a in dm.val_set.coco["annotations"])


def test_a_class_list_that_matches_no_box_is_an_error_naming_both(tmp_path):
    voc20 = ["aeroplane", "bicycle", "bird", "boat"]
    dm = _voc_module(_voc(tmp_path, objects=("raccoon",)), voc20)
    with pytest.raises(
        BagofError, match=r"no boxes .* class list is \['aeroplane'.*the files name the classes \['raccoon'\]"
    ):
        dm.setup("fit")


def test_empty_yolo_labels_folder_is_an_error(tmp_path):
    from bagof.data import DetectionDataModule

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), np.zeros((32, 32, 3), np.uint8))
    spec = {"format": "yolo", "image_dir": str(tmp_path / "images")}
    dm = DetectionDataModule(spec, spec, num_classes=1, img_size=32, classes=["raccoon"])
    with pytest.raises(BagofError, match="train split .* has no boxes in its 2 images"):
        dm.setup("fit")


def test_one_class_list_for_both_splits(compose):
    cfg = compose(["data=bccd"])
    assert list(cfg.data.classes) == ["RBC", "WBC", "Platelets"] and "classes" not in cfg.data.train
    from bagof.data import DetectionDataModule

    with pytest.raises(BagofError, match=r"data.classes has 2 names .* data.num_classes=3"):
        DetectionDataModule({"format": "voc"}, {"format": "voc"}, num_classes=3, classes=["a", "b"])


def test_a_typo_in_a_sweep_file_fails_the_sweep(tmp_path):
    from bagof.experiments.spec import SweepError, load_sweep

    path = _sweep_file(
        tmp_path,
        ONE_ROW
        + """\
- label: M
  bof: [mosiac]
  paper: {AP: 39.1, AP50: 61.8, AP75: 42.0}
""",
    )
    with pytest.raises(SweepError, match=r"'mosiac', which does not exist \(did you mean \['mosaic'\]"):
        load_sweep(path)
    assert sweeps_main(["run", str(path), "--scale", "smoke"]) == 2


# ---- 6. first-hour friction ---------------------------------------------------------------------------------
def test_multirun_flag_anywhere():
    sys.path.insert(0, str(ROOT))
    try:
        from run import multirun_flag_first
    finally:
        sys.path.pop(0)
    assert multirun_flag_first(["run.py", "+bof=mosaic,ciou", "-m", "scale=cpu"]) == [
        "run.py",
        "-m",
        "+bof=mosaic,ciou",
        "scale=cpu",
    ]
    assert multirun_flag_first(["run.py", "scale=cpu"]) == ["run.py", "scale=cpu"]


def test_run_names_say_what_ran(compose):
    from bagof.train import run_label

    assert run_label(compose(["data=bccd", "+bof=[mosaic,ciou]", "seed=3"])) == "bccd cspdarknet53-pan +mosaic+ciou s3"


def test_predictions_picture_shows_the_best_guesses_whatever_their_scores():
    from types import SimpleNamespace

    from bagof.data.detection import DetectionDataset
    from bagof.utils.visualize import draw_predictions

    img = np.zeros((64, 64, 3), np.uint8)
    coco = {
        "images": [{"id": 1, "file_name": "x", "width": 64, "height": 64}],
        "annotations": [],
        "categories": [{"id": 1, "name": "thing"}],
    }
    ds = DetectionDataset(coco, 64)
    from bagof.ops.letterbox import letterbox

    ds._cache = [letterbox(img, 64)]
    low = torch.tensor([[10.0, 10.0, 40.0, 40.0, 0.02, 0.0]])  # a half-trained model's best guess
    task = SimpleNamespace(eval=lambda: None, device="cpu", predict_batch=lambda x, metas: [low.clone()])
    pic = draw_predictions(task, ds, n=1, size=64)
    assert (pic[..., 1] > 200).sum() > 50  # green box drawn although its score is far below 0.3


def test_a_truncated_or_foreign_checkpoint_given_to_resume_is_a_clear_error(compose, tmp_path):
    from bagof.checkpoints import CARD, write_run_card
    from bagof.train import fit

    cfg = compose(["scale=smoke", "train.max_epochs=1", "logger=none"])
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, folder / "last.ckpt")
    data = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # cut short, as a full disk leaves it
    write_run_card(folder, cfg, None)
    with pytest.raises(BagofError, match="last.ckpt is truncated or not a checkpoint"):
        fit(compose(["scale=smoke", "train.max_epochs=1", "logger=none", f"train.resume={folder / 'last.ckpt'}"]))
    (folder / CARD).unlink()  # a checkpoint from elsewhere: no run card beside it
    with pytest.raises(BagofError, match="not a bagof run's checkpoint folder"):
        fit(compose(["scale=smoke", "logger=none", f"train.resume={folder / 'last.ckpt'}"]))


def test_a_failed_artifact_upload_leaves_the_run_failed_with_the_reason(compose, tmp_path, monkeypatch):
    """A full disk (or a tracking server that went away) while the run logs its artifacts: the run is FAILED with
    the reason, never FINISHED without its checkpoint and files."""
    from bagof import train as train_mod

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_mod, "_log_artifacts", full_disk)
    with pytest.raises(OSError):
        train_mod.fit(compose(["scale=smoke", "train.max_epochs=1"]))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["error"]
