"""`python -m bagof.sweeps run sweeps/table4.yaml --scale cpu --data bccd --seeds 2 [--jobs N] [--force] [overrides]`
`python -m bagof.sweeps report sweeps/table4.yaml [--parent RUN_ID]`  (rebuild from MLflow, no training)"""
from __future__ import annotations

import argparse
import shlex
import logging
import sys
from pathlib import Path

import mlflow

from ..config import CONFIG_DIR  # noqa: F401  (registers the config resolvers)
from .report import collect, header_for, write_report
from .runner import TAG_KIND, Invocation, run_sweep, tracking_uri
from .spec import SweepError, load_sweep

log = logging.getLogger("bagof.sweeps")


def _finish(sweep, inv, client, exp_id, parent_id, out_dir: Path) -> int:
    parent = client.get_run(parent_id)
    minutes = parent.data.metrics.get("total_minutes")
    results = collect(sweep, inv, client, exp_id)
    header = header_for(inv, parent.data.tags, minutes)
    runs = [p for r in results for p in r.parents]
    if runs:
        reused = sum(1 for p in runs if p != parent_id)
        header["training time of the reported runs"] = (
            f"{sum(r.minutes for r in results):.0f} min over {len(runs)} runs"
            + (f" ({reused} trained by earlier invocations and reused from the cache)" if reused else ""))
    paths = write_report(sweep, inv, results, header, out_dir)
    for p in paths:
        client.log_artifact(parent_id, str(p))
    failed = [r.row.label for r in results if r.status == "failed"]
    client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    print(paths[0].read_text())
    print(f"report: {', '.join(str(p) for p in paths)}  (MLflow parent run {parent_id}, experiment {sweep.name!r})")
    if failed:
        print(f"FAILED rows: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    p = argparse.ArgumentParser(prog="python -m bagof.sweeps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the table's rows (reusing finished runs) and write the report")
    r.add_argument("sweep")
    r.add_argument("--scale", default="cpu", help="smoke | cpu | paper")
    r.add_argument("--data", default=None, help="data config (default: the sweep file's `data`)")
    r.add_argument("--seeds", type=int, default=1)
    r.add_argument("--jobs", type=int, default=1, help="rows trained in parallel processes")
    r.add_argument("--force", action="store_true", help="retrain even when a finished identical run exists")
    r.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                   help="where rows run: local processes, SLURM jobs (submitit), or submitit's local mode")
    r.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit/SLURM option, repeatable: --slurm partition=gpu --slurm gpus_per_node=1")
    r.add_argument("--out", default="reports")
    r.add_argument("overrides", nargs="*", help="Hydra overrides applied to every row")
    rep = sub.add_parser("report", help="rebuild the report from the MLflow store, without training")
    rep.add_argument("sweep")
    rep.add_argument("--parent", default=None, help="parent run id (default: the latest invocation)")
    rep.add_argument("--out", default="reports")
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    try:
        sweep = load_sweep(a.sweep)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = mlflow.MlflowClient(tracking_uri())
    if a.cmd == "run":
        inv = Invocation(a.scale, a.data or sweep.data, a.seeds, a.jobs, a.force, tuple(a.overrides), a.launcher,
                         tuple(a.slurm), command="python -m bagof.sweeps " + shlex.join(argv))
        parent_id, _ = run_sweep(sweep, inv)
        exp_id = client.get_run(parent_id).info.experiment_id
        return _finish(sweep, inv, client, exp_id, parent_id, Path(a.out))
    exp = client.get_experiment_by_name(sweep.name)
    if exp is None:
        print(f"error: no MLflow experiment {sweep.name!r} in {tracking_uri()}; run `make {sweep.name}` first",
              file=sys.stderr)
        return 2
    if a.parent:
        parent = client.get_run(a.parent)
    else:
        found = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'table'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        if not found:
            print(f"error: experiment {sweep.name!r} has no table invocation to report", file=sys.stderr)
            return 2
        parent = found[0]
    t = parent.data.tags
    inv = Invocation(t["scale"], t["data"], int(t["seeds"]), extra=tuple(t.get("extra_overrides", "").split()))
    return _finish(sweep, inv, client, exp.experiment_id, parent.info.run_id, Path(a.out))


if __name__ == "__main__":
    sys.exit(main())
