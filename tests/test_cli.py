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
def test_each_command_says_what_it_takes(name, capsys):
    from bagof.cli.main import main

    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"bagof {name}: ") and len(out) > 150


def test_an_unknown_command_names_the_closest(capsys):
    from bagof.cli.main import main

    assert main(["trian"]) == 2 and "did you mean 'train'" in capsys.readouterr().err


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


# --- the README stays true ------------------------------------------------------------------------------------


README = (ROOT / "README.md").read_text()


def test_the_readme_is_a_short_guide_whose_links_exist():
    import re

    assert len(README.splitlines()) <= 250
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_every_toggle_and_command_line_in_the_readme_composes(compose):
    """Each `bagof train ...` line of the README composes (placeholders like <run id> aside), and every toggle it
    names has its config file."""
    import re
    import shlex

    for group, name in re.findall(r"\+(bof|bos)=`? ?([a-z_]+)", README):
        assert (ROOT / "conf" / group / f"{name}.yaml").is_file(), f"+{group}={name}"
    for alt in re.findall(r"` / `([a-z_]+)`", README):  # the table's `+bos=sam` / `sam_cbam` second names
        assert any((ROOT / "conf" / g / f"{alt}.yaml").is_file() for g in ("bof", "bos")), alt
    lines = [ln.split("#")[0] for ln in README.splitlines() if ln.startswith("bagof train")]
    assert len(lines) >= 5
    for ln in lines:
        args = [a for a in shlex.split(ln)[2:] if a not in ("-m", "--multirun")]
        args = [a for a in args if not set(a) & set("<>") and not a.startswith(("model.weights", "train.resume"))]
        args = [a.split(",")[0] if a.startswith("+bof=") and "[" not in a else a for a in args]  # -m's comma list
        compose([a.replace("../shared/datasets", str(DATASETS)) for a in args])
