"""The `bagof` command: every subcommand answers --help, and dispatches to the module that does the work."""

import os
import shutil
import subprocess
import sys

import pytest

from bagof.cli.main import COMMANDS, sweep_path

from .conftest import DATASETS, ROOT


def bagof(*args, tmp_path=None, timeout=300):
    """The installed console script when there is one (`make install`), else `python -m bagof`."""
    exe = shutil.which("bagof", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "bagof"]
    env = dict(os.environ, BAGOF_DATASETS=str(DATASETS))
    if tmp_path is not None:
        env.update(BAGOF_ROOT=str(tmp_path), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    return subprocess.run(
        cmd + list(args), cwd=tmp_path or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_bagof_help_lists_every_command():
    out = bagof("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in out.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_says_what_it_takes(name):
    out = bagof(name, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"bagof {name}: ") and len(out.stdout) > 150


def test_an_unknown_command_names_the_closest():
    out = bagof("trian")
    assert out.returncode == 2 and "did you mean 'train'" in out.stderr


def test_table_numbers_name_the_sweep_files():
    assert sweep_path("4") == str(ROOT / "sweeps" / "table4.yaml") == sweep_path("table4")
    assert sweep_path("my/own.yaml") == "my/own.yaml"


def test_train_is_the_hydra_app(tmp_path):
    out = bagof("train", "--cfg", "job", "scale=smoke", "+bof=mosaic", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mosaic: 0.5" in out.stdout and "name: smoke" in out.stdout


def test_summary_eval_and_report_run_their_modules(tmp_path):
    out = bagof("summary", "scale=smoke", tmp_path=tmp_path)
    assert out.returncode == 0 and "parameters" in out.stdout.lower(), out.stderr[-2000:]
    out = bagof("eval", "scale=smoke", tmp_path=tmp_path)
    assert out.returncode != 0 and "model.weights=" in out.stderr  # what it needs, no traceback
    assert "Traceback" not in out.stderr
    out = bagof("report", "4", tmp_path=tmp_path)
    assert out.returncode == 2 and "no MLflow experiment 'table4'" in out.stderr
