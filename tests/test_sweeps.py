"""The table engine: sweep files, result cache, failures, reports rebuilt from MLflow."""

import math
import os
import subprocess
import sys
import textwrap

import mlflow
import pytest

from bagof.experiments.__main__ import main
from bagof.experiments.report import ci95
from bagof.experiments.spec import Row, SweepError, load_sweep
from bagof.identity import config_hash

from .conftest import ROOT

SWEEPS = ROOT / "sweeps"


def _parents(tmp_path, name):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [exp.experiment_id], "tags.`bagof.kind` = 'table'", order_by=["attributes.start_time ASC"]
    )
    return client, exp, runs


def test_every_table_file_loads_with_the_papers_rows():
    expected_rows = {"table2": 10, "table3": 3, "table4": 18, "table5": 5, "table6": 5, "table7": 4}
    for name, n in expected_rows.items():
        sweep = load_sweep(SWEEPS / f"{name}.yaml")
        assert len(sweep.rows) == n and sweep.baseline_row() is not None
        assert all(set(sweep.metrics) <= set(r.paper) for r in sweep.rows if "control" not in r.label)
    t4 = load_sweep(SWEEPS / "table4.yaml")
    assert t4.rows[0].paper == {"AP": 38.0, "AP50": 60.0, "AP75": 40.8}
    assert t4.rows[-1].bof == ["ga", "grid_sensitivity", "mosaic", "iou_thresh", "optimized_anchors", "ciou"]


def test_row_overrides_and_missing_toggles():
    row = Row("x", {}, bof=["mosaic", "ciou"], bos=["fpn"], overrides=["seed=3"])
    assert row.hydra_overrides() == ["+bof=[mosaic,ciou]", "+bos=[fpn]", "seed=3"]
    assert row.missing() is None
    assert "bof/warp_drive" in Row("y", {}, bof=["mosaic", "warp_drive"]).missing()
    split = Row("z", {}, bof=["cmbn"], scale_overrides={"cpu": ["train.accumulate=2"]})
    assert split.hydra_overrides("cpu") == ["+bof=[cmbn]", "train.accumulate=2"]
    assert split.hydra_overrides("paper") == ["+bof=[cmbn]"]


def test_bad_sweep_file_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "table9.yaml")
    bad = tmp_path / "t.yaml"
    bad.write_text("rows:\n  - label: a\n    paper: {}\n  - label: a\n    paper: {}\n")
    with pytest.raises(SweepError, match="unique"):
        load_sweep(bad)


def test_ci95_hand_computed():
    m, s, h = ci95([1.0, 2.0, 3.0])
    assert (m, s) == (2.0, 1.0) and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert math.isnan(ci95([5.0])[2])


def test_config_hash_ignores_paths_and_logging_not_features(compose, tmp_path, monkeypatch):
    a = config_hash(compose(["scale=smoke"]))
    monkeypatch.setenv("BAGOF_ROOT", str(tmp_path / "elsewhere"))
    assert config_hash(compose(["scale=smoke", "logger=none", "train.progress_bar=true", "seed=7"])) == a
    assert config_hash(compose(["scale=smoke", "+bof=mosaic"])) != a
    # settings read only by the GA search (its hold-out, its trial fraction) are not part of a run's identity
    b = config_hash(compose(["data=bccd", "scale=cpu"]))
    assert config_hash(compose(["data=bccd", "scale=cpu", "~data.tune", "scale.ga_fraction=0.9"])) == b
    assert config_hash(compose(["data=bccd", "scale=cpu", "data.val.split=val"])) != b
    # the memory layout is part of it (NHWC and NCHW round differently): one comparison never pairs the two
    assert config_hash(compose(["scale=smoke", "train.channels_last=true"])) != a


def _write_sweep(tmp_path, rows: str, name="tablex"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent("""\
        title: test sweep
        task: detection
        report_scale: smoke
        data: synthetic
        design: {seeds: 1}
        metrics: [AP, AP50, AP75]
        baseline: base
        rows:
        """)
        + textwrap.indent(textwrap.dedent(rows), "  ")
    )
    return path


BASE_AND_CIOU = """\
- label: base
  paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
- label: ciou
  bof: [ciou]
  paper: {AP: 39.6, AP50: 59.2, AP75: 42.6}
"""


def test_cache_rerun_trains_nothing_and_new_seed_only(store):
    path = _write_sweep(
        store,
        BASE_AND_CIOU
        + """\
- label: future
  bof: [not_yet_a_toggle]
  not_implemented: "toggle bof/not_yet_a_toggle not implemented yet"
  paper: {AP: 40.0, AP50: 61.0, AP75: 43.0}
""",
    )
    # two jobs: a smoke run is mostly its worker's start-up, which two cores overlap
    args = ["run", str(path), "--scale", "smoke", "--jobs", "2", "--out", str(store / "out")]
    assert main(args + ["--seeds", "1"]) == 0
    assert main(args + ["--seeds", "1"]) == 0
    assert main(args + ["--seeds", "2"]) == 0
    client, exp, parents = _parents(store, "tablex")
    trained = [p.data.metrics["trained_runs"] for p in parents]
    assert trained == [2, 0, 2]  # nothing retrained; the second seed only for each row
    children = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id, parents[2].info.run_id}
    md = (store / "out" / "tablex.md").read_text()
    assert "| future | 40.0 | 61.0 | 43.0 |" in md and "not implemented: toggle bof/not_yet_a_toggle" in md
    assert "| base | 38.0 | 60.0 | 40.8 |" in md and md.count("| done |") == 2 and "| 2 | 2 | done" in md
    # the CSV carries the key metric as numbers beside the formatted columns (2 seeds: an interval)
    import csv

    rows = list(csv.DictReader((store / "out" / "tablex.csv").open()))
    for r in rows[:2]:
        mean, lo, hi = float(r["AP_mean"]), float(r["AP_ci_low"]), float(r["AP_ci_high"])
        assert lo <= mean <= hi and int(r["AP_n"]) == 2
    assert rows[0]["AP_delta"] == "" and rows[1]["AP_delta"] != "" and rows[2]["AP_mean"] == ""
    artifacts = {a.path for a in client.list_artifacts(parents[2].info.run_id)}
    assert {"tablex.md", "tablex.csv", "tablex.png"} <= artifacts
    # FORCE retrains
    assert main(args + ["--seeds", "1", "--force"]) == 0
    assert _parents(store, "tablex")[2][-1].data.metrics["trained_runs"] == 2
    # the report rebuilds from the store alone, no training
    before = (store / "out" / "tablex.csv").read_text()
    (store / "out" / "tablex.csv").unlink()
    assert main(["report", str(path), "--out", str(store / "out")]) == 0
    assert (store / "out" / "tablex.csv").read_text().splitlines()[1:] == before.splitlines()[1:]
    assert _parents(store, "tablex")[2][-1].data.metrics["trained_runs"] == 2  # report started no run
    # newer invocations that did not run to their end (one in progress in another process, one interrupted) are
    # not what a rebuild reports by default (their 2 seeds would change the table), and it leaves their status be
    tags = {k: v for k, v in parents[-1].data.tags.items() if not k.startswith("mlflow.")} | {"seeds": "2"}
    killed = client.create_run(exp.experiment_id, tags=tags)
    client.set_terminated(killed.info.run_id, "KILLED")
    running = client.create_run(exp.experiment_id, tags=tags)
    assert main(["report", str(path), "--out", str(store / "out")]) == 0
    assert (store / "out" / "tablex.csv").read_text().splitlines()[1:] == before.splitlines()[1:]
    assert client.get_run(running.info.run_id).info.status == "RUNNING"
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    # on request it reports one of them, still without touching its status
    assert main(["report", str(path), "--parent", running.info.run_id, "--out", str(store / "out")]) == 0
    # every finished run of a row's config counts: seed 0 twice (FORCE), as the mean of its two runs
    assert "| 2 | 3 | done" in (store / "out" / "tablex.md").read_text()
    assert client.get_run(running.info.run_id).info.status == "RUNNING"


def test_committed_run_records_carry_a_table_to_a_new_store(store, monkeypatch):
    """A committed report writes its runs' records to reports/runs/<sweep>/; a machine with an empty store
    restores them before it trains, so it trains nothing and reports the same table, test-set component
    included; the records are restored once, and a damaged one is a clear error naming the file."""
    import gzip
    import json

    path = _write_sweep(store, BASE_AND_CIOU)
    text = path.read_text().replace("design: {seeds: 1}", "design: {seeds: 2, bootstrap: 50}")
    path.write_text(text)
    assert main(["run", str(path), "--scale", "smoke", "--jobs", "2"]) == 0
    records = sorted((store / "reports" / "runs" / "tablex").glob("*.json.gz"))
    assert len(records) == 5  # 2 rows x 2 seeds and their invocation
    data = [json.loads(gzip.decompress(r.read_bytes())) for r in records]
    assert sum(1 for d in data if d["per_image"]) == 4 and {d["status"] for d in data} == {"FINISHED"}
    before = (store / "reports" / "tablex.csv").read_text()
    assert "test-set" in (store / "reports" / "tablex.md").read_text()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/new.db")  # another machine: an empty store
    (store / "reports" / "tablex.csv").unlink()
    assert main(["run", str(path), "--scale", "smoke"]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{store}/new.db")
    exp = client.get_experiment_by_name("tablex")
    parents = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'table'", order_by=["start_time ASC"])
    assert [p.data.metrics.get("trained_runs") for p in parents] == [2.0 * 2, 0]  # the restored one, then this
    rows = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")
    assert len(rows) == 4 and {r.data.tags["mlflow.parentRunId"] for r in rows} == {parents[0].info.run_id}
    assert {r.data.tags["bagof.archived_id"] for r in rows} == {d["run_id"] for d in data if d["per_image"]}
    assert (store / "reports" / "tablex.csv").read_text().splitlines()[1:] == before.splitlines()[1:]
    assert main(["report", str(path)]) == 0  # restored once: no duplicate runs
    assert len(client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")) == 4

    records[0].write_bytes(b"not gzip")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/third.db")
    assert main(["report", str(path)]) == 2


def test_another_sweeps_identical_row_is_reused_not_retrained(store):
    """Same config hash and seed = the same run, whichever sweep trained it (the noise study's 30-epoch
    baseline/S/M/CA are Table 4's rows)."""
    first = _write_sweep(store, BASE_AND_CIOU)
    args = ["--scale", "smoke", "--seeds", "1", "--jobs", "2", "--out", str(store / "out")]
    assert main(["run", str(first), *args]) == 0
    second = _write_sweep(
        store, BASE_AND_CIOU + "- label: mosaic\n  bof: [mosaic]\n  paper: {AP: 39.1}\n", name="tabley"
    )
    assert main(["run", str(second), *args]) == 0
    client, exp, parents = _parents(store, "tabley")
    assert parents[-1].data.metrics["trained_runs"] == 1  # only the row tablex lacks
    _, first_exp, first_parents = _parents(store, "tablex")
    shared = client.search_runs([first_exp.experiment_id], "tags.`bagof.kind` = 'row'")
    assert len(shared) == 2 and {r.data.tags["mlflow.parentRunId"] for r in shared} == {first_parents[0].info.run_id}
    md = (store / "out" / "tabley.md").read_text()
    assert md.count("| done |") == 3


def test_failing_row_is_recorded_and_others_run(store):
    path = _write_sweep(
        store,
        """\
        - label: base
          paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
        - label: broken
          overrides: [data.num_classes=99]
          paper: {AP: 1.0, AP50: 1.0, AP75: 1.0}
        """,
        name="tabley",
    )
    rc = main(["run", str(path), "--scale", "smoke", "--seeds", "1", "--jobs", "2", "--out", str(store / "out")])
    assert rc == 1  # the command fails at the end because a row failed
    client, exp, parents = _parents(store, "tabley")
    rows = {r.data.tags["row"]: r for r in client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")}
    assert rows["base"].info.status == "FINISHED" and "val/AP" in rows["base"].data.metrics
    assert rows["broken"].info.status == "FAILED" and "data.num_classes=99" in rows["broken"].data.tags["error"]
    md = (store / "out" / "tabley.md").read_text()
    assert "| failed: DatasetError: data.num_classes=99" in md and md.count("| done |") == 1


@pytest.mark.parametrize("table", ["table5", pytest.param("table4", marks=pytest.mark.slow)])
def test_make_table_smoke_end_to_end(store, table):
    """`make tableN SCALE=smoke` (the Makefile runs exactly this module): every paper row in the report.
    Table 5's rows carry Table 4's best freebies too; all 18 Table 4 rows take minutes: `make test-slow`."""
    dry = subprocess.run(
        ["make", "-n", table, "SCALE=smoke", "DATA=synthetic"], cwd=ROOT, capture_output=True, text=True
    )
    assert f"-m bagof.experiments run sweeps/{table}.yaml --scale smoke --data synthetic" in dry.stdout
    assert "--seeds" not in dry.stdout  # the sweep file's design decides
    # run from a clone of the repo as a user would (its root holds the committed reports/), then check that
    # the smoke table left every tracked file as it was
    repo = store / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    env = {"BAGOF_ROOT": str(repo), "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bagof.experiments",
            "run",
            f"sweeps/{table}.yaml",
            "--scale",
            "smoke",
            "--data",
            "synthetic",
            "--seeds",  # one seed instead of the design's: an exploratory table (its own folder)
            "1",
            "--jobs",
            "2",
        ],
        cwd=repo,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout
        == ""
    )
    md = (repo / "outputs" / "reports" / "smoke-synthetic-seeds1" / f"{table}.md").read_text()
    sweep = load_sweep(SWEEPS / f"{table}.yaml")
    for row in sweep.rows:
        paper = [f"{row.paper[m]:.1f}" if m in row.paper else "" for m in ("AP", "AP50", "AP75")]
        assert f"| {row.label} | {' | '.join(paper)} |" in md
    assert md.count("| done |") == sum(1 for r in sweep.rows if r.missing() is None)
    assert "**scale**: smoke" in md and "**hardware**" in md and "**total time**" in md
    assert "**command**: `python -m bagof.experiments run " in md
    assert "exploratory: the design says 6" in md and "**design**: fixed: 6 seeds per row" in md
    assert (repo / "outputs" / "reports" / "smoke-synthetic-seeds1" / f"{table}.png").stat().st_size > 1000


def test_submitit_launcher_path(store):
    """LAUNCHER=slurm goes through submitit; its local mode runs the same path here (no cluster needed)."""
    path = _write_sweep(
        store,
        """\
        - label: base
          paper: {AP: 38.0, AP50: 60.0, AP75: 40.8}
        """,
        name="tablez",
    )
    assert (
        main(
            [
                "run",
                str(path),
                "--scale",
                "smoke",
                "--launcher",
                "submitit-local",
                "--slurm",
                "timeout_min=30",
                "--out",
                str(store / "out"),
            ]
        )
        == 0
    )
    client, exp, _ = _parents(store, "tablez")
    (run,) = client.search_runs([exp.experiment_id], "tags.`bagof.kind` = 'row'")
    assert run.info.status == "FINISHED" and "val/AP" in run.data.metrics
    assert list((store / "outputs" / "submitit").iterdir())  # submitit's job folder with its logs


def test_report_header_records_earlier_invocations_and_a_changed_rule():
    """Runs reused from earlier invocations are listed with their seeds rule; a rule of this sweep changed
    between invocations (a maximum raised after results were seen) is named as optional stopping; another
    sweep's fixed seeds are not."""
    import json

    from bagof.experiments.report import invocations_line

    def tags(name, auto=None, seeds=3):
        t = {"mlflow.runName": name, "seeds": str(seeds)}
        return {**t, "auto_seeds": json.dumps(auto)} if auto else t

    # code 0.4.0's sequential rule, as its parent runs recorded it
    first = {"target": 1.5, "min_seeds": 3, "max_seeds": 5, "budget_min": None, "futility": 1.25}
    now = {**first, "max_seeds": 8}
    assert invocations_line([], tags("t 2", now)) is None
    noise = (tags("noise-30 2026-11-28 10:00", seeds=5), 20, False)
    line = invocations_line([noise], tags("t4 2026-11-29 09:00", now))
    assert line == "noise-30 2026-11-28 10:00 (5 seeds): 20 runs" and "optional stopping" not in line
    line = invocations_line([noise, (tags("t4 2026-11-28 12:00", first), 40, True)], tags("t4 2026-11-29", now))
    assert "t4 2026-11-28 12:00 (auto 3-5 seeds at ±1.5, futility 1.25): 40 runs" in line
    assert "rule changed between its invocations" in line
    same = invocations_line([(tags("t4 2026-11-28 12:00", now), 40, True)], tags("t4 2026-11-29", now))
    assert "changed" not in same


@pytest.mark.slow
def test_convergence_plot_from_a_schedule_length_sweep(store):
    path = store / "convergence.yaml"
    path.write_text(
        textwrap.dedent("""\
        title: convergence
        task: detection
        data: synthetic
        report_scale: smoke
        baseline: 1 epochs
        rows:
          - label: 1 epochs
            overrides: [train.max_epochs=1]
            paper: {}
          - label: 2 epochs
            overrides: [train.max_epochs=2]
            paper: {}
        """)
    )
    assert main(["run", str(path), "--scale", "smoke"]) == 0
    from bagof.experiments.convergence import main as plot_main

    assert plot_main([str(path), str(store / "curve.png")]) == 0
    assert (store / "curve.png").stat().st_size > 1000


def test_a_variant_sweep_extends_its_base_and_adds_toggles_to_every_row(tmp_path):
    base, variant = load_sweep(ROOT / "sweeps" / "noise.yaml"), load_sweep(ROOT / "sweeps" / "noise-ema.yaml")
    assert [r.label for r in variant.rows] == [r.label for r in base.rows] and variant.baseline == base.baseline
    assert variant.overrides == base.overrides and variant.name == "noise-ema" and variant.title != base.title
    assert all(v.bof == [*b.bof, "ema"] for v, b in zip(variant.rows, base.rows))
    (tmp_path / "v.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(SweepError, match="nowhere.yaml"):
        load_sweep(tmp_path / "v.yaml")


def test_a_variant_reruns_some_of_its_base_rows_with_their_configs(tmp_path):
    """sweeps/table4-recheck.yaml: Table 4's rows by label, the same rows and overrides (so the same configs, and the
    result cache shares their runs)."""
    base, recheck = load_sweep(ROOT / "sweeps" / "table4.yaml"), load_sweep(ROOT / "sweeps" / "table4-recheck.yaml")
    assert [r.label for r in recheck.rows] == ["baseline", "S+M+IT+GA+CIoU", "M+GA+OA+CIoU"]
    assert recheck.baseline == "baseline" and recheck.overrides == base.overrides
    same = {r.label: r for r in base.rows}
    assert all(r == same[r.label] for r in recheck.rows)
    (tmp_path / "t.yaml").write_text((ROOT / "sweeps" / "table4.yaml").read_text())
    (tmp_path / "v.yaml").write_text("extends: t.yaml\nonly_rows: [baseline, S+M]\n")
    with pytest.raises(SweepError, match=r"only_rows names \['S\+M'\]"):
        load_sweep(tmp_path / "v.yaml")


def test_run_identity_ignores_where_darknet_cfgs_live_not_the_weights(compose):
    base = config_hash(compose(["scale=smoke"]))
    assert config_hash(compose(["scale=smoke", "model.darknet_cfg=/elsewhere/yolov4.cfg"])) == base
    assert config_hash(compose(["scale=smoke", "model.backbone_darknet_cfg=/elsewhere/x.cfg"])) == base
    assert config_hash(compose(["scale=smoke", "model.weights=/w/last.ckpt"])) != base


def test_the_gaussian_study_shares_table5s_rows_and_changes_one_setting():
    """sweeps/gaussian-uc.yaml: Table 5's SAM and SAM-G as they are there (the same configs, so the result cache shares
    their runs), and SAM-G again with only the likelihood's weight set to zero, against SAM."""
    base, study = load_sweep(ROOT / "sweeps" / "table5.yaml"), load_sweep(ROOT / "sweeps" / "gaussian-uc.yaml")
    table5 = {r.label: r for r in base.rows}
    sam, sam_g, no_nll = study.rows
    assert study.overrides == base.overrides and study.baseline == sam.label
    assert sam == table5["CSPResNeXt50-PANet-SPP-SAM"] and sam_g == table5["CSPResNeXt50-PANet-SPP-SAM-G"]
    assert no_nll.hydra_overrides("cpu") == [*sam_g.hydra_overrides("cpu"), "loss.uc_weight=0"]
