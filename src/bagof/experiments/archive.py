"""The tables' runs as committed files, so that a table's result cache outlives the machine that trained it.

A sweep's store is a local SQLite file by default, and a new machine (a fresh clone, a CI runner, the next
session of a lent machine) starts without it: a table that takes longer than one sitting to train would start
again from nothing. ``reports/runs/<sweep>/`` keeps, per run, one small gzipped JSON record: the run's tags,
params, final metrics, status and times, and its test-set matches per image in compact form
(``eval.resample.to_compact``: what the test-set component of the statistics resamples, ~35 kB a BCCD run against
~1.8 MB for its detections).
Checkpoints are not kept: a record is what a table's analysis reads, not a model.

- ``archive`` writes the records of the runs a report uses (every finished run of each row's config, whichever
  sweep trained it) and of the invocations (parent runs) that trained them, beside the report: ``reports/runs/``
  for a committed report, ``outputs/reports/.../runs/`` for any other. A run's record is written once (a
  finished run does not change); an invocation's is rewritten while its status or totals change.
- ``restore`` puts the records of ``reports/runs/*/`` into the store before a sweep runs or reports: each becomes
  a run of its original experiment, tags, metrics and matches, tagged ``bagof.archived_id`` with its original id
  (parents re-linked), and is skipped when the store already holds it. The result cache and the statistics then
  see it like any other run of its config.

Limitation: a detection row that starts from a pretrained classifier (Table 6) names that classifier's run id in
its config, and a restored classifier gets a new id, so such rows are retrained on a new store.

MLflow's own export tools (mlflow-export-import) copy whole runs with their artifacts, checkpoints included; the
records here are tens of kB each, small enough to commit beside the reports they feed."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

from ..eval.resample import COMPACT
from .launch import TAG_KIND, experiment_id

log = logging.getLogger("bagof.experiments")

ARCHIVED_ID = "bagof.archived_id"  # on a restored run: the id it had in the store that trained it
FORMAT = 1


def original_id(run) -> str:
    return run.data.tags.get(ARCHIVED_ID, run.info.run_id)


def record_of(client, run, matches_of) -> dict:
    """One run as a JSON-able record; ``matches_of(client, run_id)`` gives its test-set matches in compact form
    (``eval.resample.to_compact``), or None."""
    kind = run.data.tags.get(TAG_KIND, "")
    return {
        "format": FORMAT,
        "run_id": original_id(run),
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "tags": {k: v for k, v in run.data.tags.items() if k != ARCHIVED_ID},
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "per_image": matches_of(client, run.info.run_id) if kind != "table" else None,
    }


def write_records(client, runs, folder: Path, matches_of) -> int:
    """Writes each run's record to ``folder/<original id>.json.gz`` unless it is there; the number written."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for run in runs:
        path = folder / f"{original_id(run)}.json.gz"
        table = run.data.tags.get(TAG_KIND) == "table"
        if path.exists() and not table:  # a finished run never changes; an invocation's status and totals do
            continue
        data = json.dumps(record_of(client, run, matches_of), sort_keys=True, separators=(",", ":"))
        if path.exists() and gzip.decompress(path.read_bytes()).decode() == data:
            continue
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(data.encode(), mtime=0))
        tmp.replace(path)
        n += 1
    return n


def archive(client, run_ids, folder: Path, matches_of) -> int:
    """Records of the runs ``run_ids`` (those a report used) and of the invocations that trained them; the
    number written."""
    runs = {}
    for run_id in run_ids:
        run = client.get_run(run_id)
        runs[run_id] = run
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent and parent not in runs:
            try:
                runs[parent] = client.get_run(parent)
            except Exception:  # a parent deleted from the store: the run still counts without it
                pass
    n = write_records(client, runs.values(), folder, matches_of)
    if n:
        log.info("archived %d run record(s) in %s", n, folder)
    return n


def read_records(root: Path) -> list[dict]:
    """Every record under ``root`` (``reports/runs``), each once (a run two sweeps used is in both folders)."""
    out: dict[str, dict] = {}
    for path in sorted(root.glob("*/*.json.gz")):
        try:
            rec = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable run record ({e}); restore it with `git checkout {path}`") from e
        if rec.get("format") != FORMAT:
            raise ValueError(f"{path}: run record format {rec.get('format')!r}, this code reads {FORMAT}")
        out.setdefault(rec["run_id"], rec)
    return list(out.values())


def restore(client, root: Path, artifact_location=None, lock=None) -> int:
    """Creates in the store every record under ``root`` that it lacks (by original run id); the number created.
    Invocations first, so that their rows are re-linked to them."""
    import contextlib
    import tempfile

    from mlflow.entities import Metric, Param

    records = read_records(root) if root.is_dir() else []
    if not records:
        return 0
    with lock if lock is not None else contextlib.nullcontext():
        present: dict[str, str] = {}  # original id -> id in this store
        for run in client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50000):
            present[original_id(run)] = run.info.run_id
        todo = [r for r in records if r["run_id"] not in present]
        todo.sort(key=lambda r: r["tags"].get(TAG_KIND) != "table")  # parents before their children
        experiments: dict[str, str] = {}
        for rec in todo:
            name = rec["experiment"]
            if name not in experiments:
                experiments[name] = experiment_id(client, name, artifact_location)
            tags = dict(rec["tags"], **{ARCHIVED_ID: rec["run_id"]})
            parent = tags.get("mlflow.parentRunId")
            if parent:
                tags["mlflow.parentRunId"] = present.get(parent, parent)
            run = client.create_run(
                experiments[name], start_time=rec["start_time"], tags=tags, run_name=rec.get("run_name")
            )
            run_id = run.info.run_id
            t = rec["end_time"] or rec["start_time"] or 0
            metrics = [Metric(k, v, t, 0) for k, v in rec["metrics"].items()]
            params = [Param(k, v) for k, v in rec["params"].items()]
            for i in range(0, max(len(metrics), len(params)), 100):  # MLflow takes 100 params a batch
                client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
            if rec.get("per_image") is not None:
                with tempfile.TemporaryDirectory() as d:
                    p = Path(d) / COMPACT
                    p.write_bytes(gzip.compress(json.dumps(rec["per_image"]).encode(), mtime=0))
                    client.log_artifact(run_id, str(p))
            # an invocation recorded while it ran is not running here: the machine that ran it is gone
            status = "KILLED" if rec["status"] == "RUNNING" else rec["status"]
            client.set_terminated(run_id, status, end_time=rec["end_time"])
            present[rec["run_id"]] = run_id
    log.info("restored %d run(s) from %s into the store", len(todo), root)
    return len(todo)


def restore_committed(client, base, root: Path) -> int:
    """``restore`` of ``root/reports/runs`` into the store of the composed base config ``base``, under its lock."""
    from .launch import store_lock

    lock = store_lock(base.logger.tracking_uri, base.paths.root)
    return restore(client, root / "reports" / "runs", base.logger.artifact_location, lock)
