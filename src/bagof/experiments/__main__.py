"""`python -m bagof.experiments run sweeps/table4.yaml --scale cpu --data bccd [--jobs N] [--force] [overrides...]`
`python -m bagof.experiments report sweeps/table4.yaml [--parent RUN_ID]`  (rebuild from MLflow, no training)

Reports go to ``reports/`` only from the configuration its committed tables came from (the sweep file's
``report`` scale and data, no extra overrides); any other invocation (``SCALE=smoke``, another dataset,
``ARGS=...``) writes to ``outputs/reports/<scale>-<data>[-<overrides hash>]/``, so a smoke run never replaces
a committed result. Ctrl-C or SIGTERM: the runs in flight are killed (a run that had already finished keeps its
result), no report is written (`report --parent ID`, printed, writes it for what finished), and the command
exits 130 / 143 within seconds."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections import Counter

from ..config import CONFIG_DIR  # noqa: F401  (registers the config resolvers)
from .archive import archive, restore_committed
from .invocation import Invocation, compose_base
from .launch import TAG_KIND, open_store
from .report import (
    analysis_of,
    header_for,
    invocations_line,
    project_root,
    report_dir,
    rule_changed,
    write_report,
)
from .runner import run_sweep
from .spec import SweepError, load_sweep
from .store import collect, compact_matches_of, resampled_values, used_runs

log = logging.getLogger("bagof.experiments")


def _finish(sweep, inv, client, exp_id, parent_id, out: str | None, interrupted=None, rebuild=False) -> int:
    if interrupted is not None:  # the user wants the machine back: no report now (it reads every run); on request
        client.set_terminated(parent_id, "KILLED")
        print(
            f"interrupted by {interrupted}: the runs that finished are kept (the next invocation reuses them); "
            f"the table of what finished: python -m bagof.experiments report {sweep.path} --parent {parent_id}",
            file=sys.stderr,
        )
        return interrupted.exit_code
    parent = client.get_run(parent_id)
    minutes = parent.data.metrics.get("total_minutes")
    results = collect(sweep, inv, client, exp_id)
    header = header_for(sweep, inv, parent.data.tags, minutes)
    boot = resampled_values(sweep, results, client, sweep.design.bootstrap)
    if sweep.design.bootstrap and not boot and any(r.runs for r in results) and sweep.task == "detection":
        header["test-set component"] = "not computed: a run has no logged matches (trained before code 0.5.0)"
    elif not sweep.design.bootstrap or sweep.task != "detection":
        header["test-set component"] = "not computed (the design's bootstrap is 0, or not a detection table)"
    analysis = analysis_of(sweep, results, boot)
    commits = sum((r.commits for r in results), Counter())
    if commits:
        header["commits of the runs"] = ", ".join(f"{c} ({n} runs)" for c, n in commits.most_common())
    runs = [p for r in results for p in r.parents]
    if runs:
        reused = sum(1 for p in runs if p != parent_id)
        header["training time of the reported runs"] = (
            f"{sum(r.minutes for r in results):.0f} min over {len(runs)} runs"
            + (f" ({reused} trained by earlier invocations and reused from the cache)" if reused else "")
        )
        earlier = Counter(p for p in runs if p and p != parent_id)
        invocations = sorted((client.get_run(p) for p in earlier), key=lambda r: r.info.start_time)
        line = invocations_line(
            [(r.data.tags, earlier[r.info.run_id], r.info.experiment_id == exp_id) for r in invocations],
            parent.data.tags,
        )
        if line:
            header["earlier invocations whose runs are reported"] = line
        same = [(r.data.tags, earlier[r.info.run_id], r.info.experiment_id == exp_id) for r in invocations]
        if rule_changed(same, parent.data.tags) and "exploratory" not in header["seeds"]:
            header["seeds"] += "; exploratory: this sweep's seeds rule changed between the invocations it reports"
    out_dir, committed = report_dir(sweep, inv, out)
    paths = write_report(sweep, inv, results, header, out_dir, discussion=committed, analysis=analysis)
    for p in paths:
        client.log_artifact(parent_id, str(p))
    failed = [r.row.label for r in results if r.status == "failed"]
    if not rebuild:  # a rebuild leaves the invocation's status as it was (it may be running in another process)
        client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    archive(client, used_runs(results), out_dir / "runs" / sweep.name, compact_matches_of)
    print(paths[0].read_text())
    print(f"report: {', '.join(str(p) for p in paths)}  (MLflow parent run {parent_id}, experiment {sweep.name!r})")
    if failed:
        print(f"FAILED rows: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _latest_completed(client, exp_id: str, name: str):
    """The newest invocation that ran to its end (FINISHED, or FAILED: some rows failed, the rest reported).

    Newer ones that did not are skipped, with a note: RUNNING is in progress in another process (or died
    without a word), KILLED was interrupted; reporting either by default would replace a finished table by a
    partial one. `--parent` still reports them on request."""
    found = client.search_runs(
        [exp_id], f"tags.`{TAG_KIND}` = 'table'", order_by=["attributes.start_time DESC"], max_results=200
    )
    if not found:
        print(f"error: experiment {name!r} has no table invocation to report", file=sys.stderr)
        return None
    for run in found:
        if run.info.status in ("FINISHED", "FAILED"):
            return run
        print(
            f"note: skipping invocation {run.info.run_id} ({run.info.status}: "
            + ("in progress or died" if run.info.status == "RUNNING" else "interrupted")
            + "); pass --parent to report it",
            file=sys.stderr,
        )
    print(f"error: experiment {name!r} has no invocation that ran to its end; pass --parent RUN_ID", file=sys.stderr)
    return None


def _seeds(a, sweep) -> int:
    if a.seeds is None:
        return sweep.design.seeds
    if not a.seeds.isdigit() or int(a.seeds) < 1:
        raise SweepError(f"--seeds {a.seeds}: a number of seeds (1, 2, ...); leave it out for the design's")
    return int(a.seeds)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m bagof.experiments", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the table's rows (reusing finished runs) and write the report")
    r.add_argument("sweep")
    r.add_argument("--scale", default="cpu", help="smoke | cpu | paper")
    r.add_argument("--data", default=None, help="data config (default: the sweep file's `data`)")
    r.add_argument(
        "--seeds",
        default=None,
        help="seeds per row (default: the sweep file's design). Another number trains an exploratory table: "
        "its report goes to outputs/reports/, never reports/",
    )
    r.add_argument("--jobs", type=int, default=1, help="rows trained in parallel processes")
    r.add_argument("--force", action="store_true", help="retrain even when a finished identical run exists")
    r.add_argument(
        "--launcher",
        default="local",
        choices=["local", "slurm", "submitit-local"],
        help="where rows run: local processes, SLURM jobs (submitit), or submitit's local mode",
    )
    r.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a submitit/SLURM option, repeatable: --slurm partition=gpu --slurm gpus_per_node=1",
    )
    r.add_argument(
        "--out",
        default=None,
        help="report folder (default: reports/ for the committed configuration, else outputs/reports/<scale>-<data>/)",
    )
    r.add_argument("overrides", nargs="*", help="Hydra overrides applied to every row")
    rep = sub.add_parser("report", help="rebuild the report from the MLflow store, without training")
    rep.add_argument("sweep")
    rep.add_argument(
        "--parent", default=None, help="parent run id (default: the latest invocation that ran to its end)"
    )
    rep.add_argument("--out", default=None, help="report folder (default: as for run)")
    arc = sub.add_parser(
        "archive",
        help="write the records of the committed configuration's finished runs to reports/runs/<sweep>/ (no "
        "report): a table still training keeps its runs on a new machine",
    )
    arc.add_argument("sweep")
    argv = sys.argv[1:] if argv is None else argv
    # overrides may follow the options (`make table4 ARGS=...` appends them): argparse leaves those over
    a, rest = p.parse_known_args(argv)
    bad = [x for x in rest if x.startswith("-") or "=" not in x or a.cmd != "run"]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    if rest:
        a.overrides = list(a.overrides) + rest
    try:
        sweep = load_sweep(a.sweep)
        if a.cmd == "run":
            inv = Invocation(
                a.scale,
                a.data or sweep.data,
                _seeds(a, sweep),
                a.jobs,
                a.force,
                tuple(a.overrides),
                a.launcher,
                tuple(a.slurm),
                command="python -m bagof.experiments " + shlex.join(argv),
            )
            report_dir(sweep, inv, a.out)  # refuse a folder of committed results before training, not after
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = compose_base()
    client = open_store(base.logger.tracking_uri, base.paths.root)
    try:  # the committed run records (reports/runs/): the result cache of every earlier machine
        restore_committed(client, base, project_root())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.cmd == "archive":
        inv = Invocation(sweep.report_scale, sweep.data, sweep.design.seeds)
        exp = client.get_experiment_by_name(sweep.name)
        results = collect(sweep, inv, client, exp.experiment_id if exp else "0")
        out = project_root() / "reports" / "runs" / sweep.name
        n = archive(client, used_runs(results), out, compact_matches_of)
        print(f"{n} new run record(s) in {out} ({len(used_runs(results))} runs of the committed configuration)")
        return 0
    if a.cmd == "run":
        parent_id, _, interrupted = run_sweep(sweep, inv)
        exp_id = client.get_run(parent_id).info.experiment_id
        return _finish(sweep, inv, client, exp_id, parent_id, a.out, interrupted)
    exp = client.get_experiment_by_name(sweep.name)
    if exp is None:
        print(
            f"error: no MLflow experiment {sweep.name!r} in {base.logger.tracking_uri}; run `make {sweep.name}` first",
            file=sys.stderr,
        )
        return 2
    if a.parent:
        parent = client.get_run(a.parent)
        if parent.info.status not in ("FINISHED", "FAILED"):  # FAILED ran to its end, some rows failed
            status = parent.info.status
            print(f"note: invocation {a.parent} is {status}: the report covers what had finished", file=sys.stderr)
    else:
        parent = _latest_completed(client, exp.experiment_id, sweep.name)
        if parent is None:
            return 2
    t = parent.data.tags
    inv = Invocation(
        t["scale"],
        t["data"],
        int(t["seeds"]),
        extra=tuple(t.get("extra_overrides", "").split()),
        row_seeds=json.loads(t.get("row_seeds", "{}")),  # an old SEEDS=auto invocation's seeds per row
    )
    try:
        report_dir(sweep, inv, a.out)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _finish(sweep, inv, client, exp.experiment_id, parent.info.run_id, a.out, rebuild=True)


if __name__ == "__main__":
    sys.exit(main())
