"""The diagnostic scripts under scripts/ on a real (smoke-scale) store."""

import importlib.util
import json

import pytest

from bagof.experiments.__main__ import main

from .conftest import ROOT
from .test_sweeps import _write_sweep


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~60 s: two smoke runs, then two scorings of the Gaussian one (`make test-slow`)
def test_gaussian_score_ablation_reproduces_the_logged_ap_and_drops_only_the_factor(store, capsys):
    rows = "- label: base\n  paper: {}\n- label: gauss\n  bos: [gaussian]\n  paper: {}\n"
    path = _write_sweep(store, rows, name="tableg")
    assert main(["run", str(path), "--scale", "smoke", "--seeds", "1", "--out", str(store / "reports")]) == 0
    capsys.readouterr()
    _script("gaussian_score_ablation").main("tableg", "gauss")
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert line["seed"] == "0" and line["loss"] == "reference (sigma_const)"
    # re-scored with the factor, the checkpoint gives the AP the run logged (same data, decode and NMS)
    for k in ("AP", "AP50", "AP75"):
        assert line["with factor"][k] == pytest.approx(line["logged"][k], abs=1e-4)
    # the factor (1 - mean sigma) < 1 changes every box's score, so the two scorings differ (an untrained network's
    # AP is 0 at this scale: the scores are what tell them apart; a flag decode ignored would give equal ones)
    with_, without = line["with factor"], line["without"]
    assert with_["detections"] > 0 and without["detections"] > 0
    assert without["mean_score"] != with_["mean_score"]
    # the plain row has no Gaussian head: nothing to re-score
    _script("gaussian_score_ablation").main("tableg", "base")
    assert not [x for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
