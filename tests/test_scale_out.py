"""Beyond one machine (issue 15): the GPU check's CPU dry run, the settings that follow the machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
import torch

from bagof import config as bagof_config
from bagof.cli import gpu_check
from bagof.identity import config_hash

from .conftest import DATASETS, ROOT, need
from .test_safety import ONE_ROW, _env, _sweep_file

TWO_ROWS = ONE_ROW + "- label: ciou\n  bof: [ciou]\n  paper: {AP: 39.6, AP50: 59.2, AP75: 42.6}\n"


def _strict_json(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_gpu_check_dry_run_runs_every_part_on_the_cpu(tmp_path):
    need(DATASETS / "coco128")
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "BAGOF_ROOT": str(tmp_path), "BAGOF_DATASETS": str(DATASETS)}
    env.pop("OUT", None)
    p = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = _strict_json(out.read_text())  # pycocotools' undefined APs are null, not NaN
    assert report["dry_run"] is True and report["machine"]["cuda"] == torch.version.cuda  # the build's, GPU or not
    for part in ("throughput", "parity", "train", "cmbn_sat_bf16-mixed", "gaussian_bf16-mixed"):
        assert "error" not in report[part], report[part]
    rows = report["throughput"]
    assert {(r["memory_format"], r["batch"]) for r in rows} == {
        (f, b) for f in ("nchw", "channels_last") for b in (2, 4)
    }
    assert all(r["images_per_s"] > 0 and r["loss_finite"] for r in rows)
    par = report["parity"]  # the CPU against itself here: exact, and the train-mode floor is measured
    assert par["pass"] and par["eval"]["grad_rel_l2_all"] == 0.0 and par["train"]["loss_rel_diff"] == 0.0
    assert par["train"]["floor_cpu_nudged"]["grad_rel_l2_all"] > 0
    assert report["train"]["metrics"]["APs"] is None or report["train"]["metrics"]["APs"] >= 0
    committed = ROOT / "reports" / "bench" / "gpu.json"
    assert not committed.exists() or _strict_json(committed.read_text())["dry_run"] is False


def test_gpu_check_update_keeps_other_parts_and_refuses_another_machine(tmp_path, monkeypatch, capsys):
    need(DATASETS / "coco128")
    monkeypatch.setenv("BAGOF_DATASETS", str(DATASETS))
    monkeypatch.setenv("BAGOF_ROOT", str(tmp_path))
    out = tmp_path / "gpu.json"
    here = gpu_check._machine(torch.device("cpu"))["device"]
    out.write_text(json.dumps({"machine": {"device": "NVIDIA H100 80GB HBM3"}, "throughput": [{"batch": 8}]}))
    assert gpu_check.main(["--dry-run", "--update", "--out", str(out), "--parts", "parity"]) == 2
    err = capsys.readouterr().err
    assert "NVIDIA H100 80GB HBM3" in err and "drop --update" in err
    out.write_text(json.dumps({"machine": {"device": here}, "throughput": [{"batch": 8}]}))
    assert gpu_check.main(["--dry-run", "--update", "--out", str(out), "--parts", "parity"]) == 0
    report = _strict_json(out.read_text())
    assert report["throughput"] == [{"batch": 8}] and report["parity"]["pass"]
    assert set(report["part_generated"]) == {"parity"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_gpu_check_without_a_gpu_says_to_use_the_dry_run(capsys):
    assert gpu_check.main([]) == 2
    assert "--dry-run" in capsys.readouterr().err


@pytest.mark.parametrize("cores,workers", [(1, 0), (2, 0), (4, 3), (16, 8), (64, 8)])
def test_loader_workers_follow_the_cores_this_process_may_use(monkeypatch, cores, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert bagof_config.loader_workers(8) == workers


def test_paper_scale_needs_no_gpu_flags_and_a_speed_setting_keeps_the_identity(compose):
    cfg = compose(["scale=paper", "data=coco128"])
    on_gpu = torch.cuda.is_available()
    # NHWC where it pays: a GPU, or bf16 on the CPU
    assert cfg.train.channels_last is (on_gpu or cfg.train.precision == "bf16-mixed") and cfg.train.cudnn_benchmark
    assert cfg.train.precision == bagof_config.fast_precision()
    assert cfg.data.num_workers == bagof_config.loader_workers(8)
    base = compose(["scale=cpu", "data=bccd"])
    # the cpu scale: NHWC where it pays (bf16 on the CPU, a GPU), NCHW in float32 on the CPU
    assert base.train.channels_last is (on_gpu or base.train.precision == "bf16-mixed")
    assert compose(["scale=cpu", "train.precision=32-true"]).train.channels_last is on_gpu
    fast = compose(["scale=cpu", "data=bccd", f"train.cudnn_benchmark={not base.train.cudnn_benchmark}"])
    assert config_hash(base) == config_hash(fast)  # a speed setting: the same results, the cache reuses them
    other = compose(["scale=cpu", "data=bccd", f"train.channels_last={not base.train.channels_last}"])
    assert config_hash(base) != config_hash(other)  # the layout rounds differently (NHWC - NCHW -0.5 +- 1.2 AP)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_server(tmp_path, port: int) -> subprocess.Popen:
    """`mlflow server` (sqlite backend, artifacts proxied to tmp_path/served) on 127.0.0.1:port, once it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db"]
        + ["--artifacts-destination", str(tmp_path / "served"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "mlflow server did not start"
            time.sleep(0.5)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group ``proc`` leads, SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_two_job_sweep_logs_every_run_once_to_an_mlflow_tracking_server(tmp_path):
    """The shared store of several workers: `mlflow server` (sqlite backend, artifacts proxied) on a free port."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path, port)
    try:
        path = _sweep_file(tmp_path, TWO_ROWS)
        env = {**_env(tmp_path), "MLFLOW_TRACKING_URI": uri}
        cmd = [sys.executable, "-m", "bagof.experiments", "run", str(path), "--scale", "smoke", "--jobs", "2"]
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("tables")
        runs = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")
        assert sorted(r.data.tags["row"] for r in runs) == ["base", "ciou"]  # each once
        assert all(r.info.status == "FINISHED" for r in runs)
        for r in runs:  # artifacts went through the server to its destination
            assert "config.yaml" in {a.path for a in client.list_artifacts(r.info.run_id)}
        assert list((tmp_path / "served").rglob("config.yaml")) and not (tmp_path / "mlflow.db").exists()
    finally:
        stop_group(server)


def test_the_avx2_emulation_of_make_bench_changes_what_it_claims():
    """make bench's second half runs with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2: ATen, the Mish
    kernel's compiler and oneDNN then use AVX2 and the cpu scale picks float32, as on a CPU without bfloat16."""
    from bagof.cli.bench import EMULATE_AVX2

    code = "import json; from bagof.cli.bench import isa_state; print(json.dumps(isa_state()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **EMULATE_AVX2}, capture_output=True, text=True, timeout=300
    )
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state["aten_capability"] == "AVX2" and state["inductor_isa"] == "avx2"
    assert state["onednn_isa"] == "Intel AVX2" and state["precision"] == "32-true"
