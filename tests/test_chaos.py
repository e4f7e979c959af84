"""A sweep under the faults a long run meets on a shared machine or cluster: a worker SIGKILLed (the OOM killer, a
pre-emption), the tracking server restarted mid-sweep, a Ctrl-C, then the same command again. At the end every
(row, seed) is FINISHED exactly once, nothing is left RUNNING, and the table equals an undisturbed sweep's.

Minutes of training: marked slow and chaos (`make test-slow`; .ci/run runs `pytest -m chaos` after the suite)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from .test_safety import _descendants, _env, _survivors, _sweep_file, _wait_for
from .test_scale_out import _free_port, mlflow_server, stop_group

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

ROWS = """\
- label: base
  overrides: [train.max_epochs=4]
  paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
- label: ciou
  bof: [ciou]
  overrides: [train.max_epochs=4]
  paper: {AP: 39.6, AP50: 59.2, AP75: 42.6}
- label: mosaic
  bof: [mosaic]
  overrides: [train.max_epochs=4]
  paper: {AP: 39.1, AP50: 61.8, AP75: 42.0}
"""
SEEDS = 2


def _sweep(tmp_path, path, uri, out, **kw):
    cmd = [sys.executable, "-m", "bagof.experiments", "run", str(path), "--scale", "smoke", "--jobs", "2", "--out", out]
    env = {**_env(tmp_path), "MLFLOW_TRACKING_URI": uri}
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def _workers(pid: int) -> list[int]:
    """The sweep's job processes (each leads its own process group, see launch._worker)."""
    out = []
    for p in _descendants(pid):
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd and os.getpgid(p) == p:
            out.append(p)
    return out


def _table(path) -> dict[str, str]:
    rows = list(csv.DictReader(open(path)))
    return {r["row"]: (r["AP_mean"], r["AP_n"]) for r in rows}


def test_a_sweep_survives_kills_a_server_restart_and_ctrl_c(tmp_path):
    rng = random.Random(2026)  # the fault schedule: bounded and seeded
    path = _sweep_file(tmp_path, ROWS, name="chaos")
    path.write_text(path.read_text().replace("design: {seeds: 1}", f"design: {{seeds: {SEEDS}}}"))

    # the undisturbed sweep, on a store of its own
    calm = _sweep(tmp_path, path, f"sqlite:///{tmp_path}/calm.db", str(tmp_path / "calm"))
    assert calm.wait(timeout=1200) == 0, calm.stdout.read()[-3000:]

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path, port)
    client = mlflow.MlflowClient(uri)

    def runs():
        exp = client.get_experiment_by_name("chaos")
        return client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'") if exp else []

    try:
        first = _sweep(tmp_path, path, uri, str(tmp_path / "out"), start_new_session=True)
        # 1. a worker killed as the OOM killer would, while its run trains
        assert _wait_for(lambda: _workers(first.pid) and any(r.info.status == "RUNNING" for r in runs()), 600)
        time.sleep(rng.uniform(1, 4))
        victim = rng.choice(_workers(first.pid))
        os.kill(victim, signal.SIGKILL)
        # 2. the tracking server restarts while the other job (and the next one) log to it
        time.sleep(rng.uniform(1, 3))
        stop_group(server)
        time.sleep(rng.uniform(1, 3))
        server = mlflow_server(tmp_path, port)
        # 3. Ctrl-C once a run has finished after the restart, with jobs in flight
        assert _wait_for(lambda: sum(r.info.status == "FINISHED" for r in runs()) >= 1, 900)
        time.sleep(rng.uniform(0, 2))
        tree = _descendants(first.pid)
        t0 = time.time()
        os.killpg(first.pid, signal.SIGINT)
        out = first.communicate(timeout=60)[0]
        assert time.time() - t0 < 5 and first.returncode == 130, out[-3000:]
        assert not _survivors(tree, t0 + 5), "a process of the interrupted sweep outlived it by 5 s"
        assert not [r for r in runs() if r.info.status == "RUNNING"], "a run was left RUNNING by the stop"
        # 4. the same command again finishes the table
        again = _sweep(tmp_path, path, uri, str(tmp_path / "out"))
        out = again.communicate(timeout=1800)[0]
        assert again.returncode == 0, out[-3000:]
        final = runs()
        finished = [(r.data.tags["row"], r.data.tags["seed"]) for r in final if r.info.status == "FINISHED"]
        assert sorted(finished) == sorted((row, str(s)) for row in ("base", "ciou", "mosaic") for s in range(SEEDS))
        assert not [r for r in final if r.info.status == "RUNNING"]
        assert any(r.info.status == "FAILED" and "worker died" in r.data.tags.get("error", "") for r in final)
        assert _table(tmp_path / "out" / "chaos.csv") == _table(tmp_path / "calm" / "chaos.csv")
    finally:
        stop_group(server)
