"""The MLflow store as the tables read it: a row's finished runs (whichever invocation or sweep trained them), the
classifiers Table 6 starts from, and each run's logged test-set matches."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from ..eval.resample import MATCHES
from ..identity import CODE_VERSION, config_hash
from ..provenance import GIT_COMMIT, GIT_DIRTY
from .invocation import Invocation, compose_base, compose_pretrain, compose_row
from .launch import TAG_KIND, experiment_id, open_store, store_lock, tracking_uri
from .spec import Row, Sweep

PRETRAIN_KINDS = ("pretrain", "row")  # a classifier row of Table 2/3 serves as Table 6's pretraining too


def find_finished(client, exp_id: str | None, chash: str, seed: int, kinds=("row",)):
    """The latest FINISHED run of this config and seed under this code version: in ``exp_id``, or in any
    experiment when None (a pretrained classifier is the same run whichever table trained it)."""
    ids = [exp_id] if exp_id else [e.experiment_id for e in client.search_experiments()]
    for k in kinds:
        runs = client.search_runs(
            ids,
            f"tags.config_hash = '{chash}' and tags.seed = '{seed}' and tags.code_version = '{CODE_VERSION}' "
            f"and tags.`{TAG_KIND}` = '{k}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            return runs[0]
    return None


def find_row(client, exp_id: str, chash: str, seed: int):
    """A row's finished run: in its table's experiment, else the same config and seed trained by another sweep
    (Table 4's baseline by the noise study, a row two tables share) or a classifier that Table 6 pretrained.
    The config hash covers everything that changes results, so these are the same run."""
    return find_finished(client, exp_id, chash, seed) or find_finished(client, None, chash, seed, PRETRAIN_KINDS)


def backbone_from(client, sweep: Sweep, row: Row, inv: Invocation, seed: int) -> list[str]:
    """``[model.backbone_weights=runs:/<id>]`` for a row with ``pretrain`` (its classifier's finished run),
    ``[]`` without; LookupError when that classifier has no finished run yet."""
    if row.pretrain is None:
        return []
    cfg = compose_pretrain(sweep, row, inv, seed)
    run = find_finished(client, None, config_hash(cfg), seed, PRETRAIN_KINDS)
    if run is None:
        raise LookupError(f"its pretrained classifier ({row.pretrain_row().label}, seed {seed}) has no finished run")
    return [f"model.backbone_weights=runs:/{run.info.run_id}"]


@dataclass
class Store:
    """The store this invocation writes to, opened once."""

    client: object
    lock: object
    exp_id: str
    parent_id: str = ""


def open_sweep_store(sweep_name: str) -> Store:
    base = compose_base()
    uri = tracking_uri(base)
    client = open_store(uri, base.paths.root)
    lock = store_lock(uri, base.paths.root)
    return Store(client, lock, experiment_id(client, sweep_name, base.logger.artifact_location, lock))


@dataclass
class RowResult:
    row: Row
    status: str  # done / failed / not implemented / not run
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value (percent)
    note: str = ""
    minutes: float = 0.0  # training time of the runs reported
    parents: list[str] = field(default_factory=list)  # the invocation (parent run) each reported run came from
    runs: dict[int, list[str]] = field(default_factory=dict)  # seed -> the finished runs of it (all are used)
    commits: Counter = field(default_factory=Counter)  # git commit (+dirty) -> runs

    def n(self, metric: str) -> int:
        return len(self.values.get(metric, {}))

    @property
    def n_runs(self) -> int:
        return sum(len(v) for v in self.runs.values())


def _finished(client, chash: str, seed: int | None = None) -> list:
    """Every FINISHED run of this config (and seed) under this code version, in any experiment: a row's runs
    whichever invocation or sweep trained them. Newest first."""
    seed_q = f" and tags.seed = '{seed}'" if seed is not None else ""
    out = []
    for kind in PRETRAIN_KINDS:
        out += client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            f"tags.config_hash = '{chash}'{seed_q} and tags.code_version = '{CODE_VERSION}' "
            f"and tags.`{TAG_KIND}` = '{kind}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=5000,
        )
    return out


def collect(sweep: Sweep, inv: Invocation, client: mlflow.MlflowClient, exp_id: str) -> list[RowResult]:
    """Every finished run of each row's config in the store, whichever invocation trained it: the seeds this
    invocation asked for, and any other seed the store holds (another sweep's, an earlier invocation's). A seed
    trained more than once (``--force``) counts as the mean of its runs. A seed asked for without a finished run
    reports its failure, if it has one."""
    out = []
    for row in sweep.rows:
        reason = row.missing()
        if reason:
            out.append(RowResult(row, "not implemented", note=reason))
            continue
        res = RowResult(row, "not run")
        errors = []
        hashes: dict[int, str] = {}
        for seed in range(inv.seeds_of(row.label)):
            try:
                hashes[seed] = config_hash(
                    compose_row(sweep, row, inv, seed, backbone_from(client, sweep, row, inv, seed))
                )
            except LookupError as e:
                errors.append(f"pretraining: {e}")
            except Exception as e:
                errors.append(f"config: {str(e).splitlines()[0]}")
        found = []
        if row.pretrain is None and hashes:  # the hash leaves the seed out: one look finds every seed's runs
            found = _finished(client, next(iter(hashes.values())))
        else:  # a pretrained row's config names its seed's classifier run: one look per seed
            for seed, chash in hashes.items():
                found += _finished(client, chash, seed)
        by_seed: dict[int, list] = {}
        for run in found:
            by_seed.setdefault(int(run.data.tags["seed"]), []).append(run)
        for seed, chash in hashes.items():
            if seed in by_seed:
                continue
            ended = client.search_runs(
                [exp_id],
                f"tags.config_hash = '{chash}' and tags.seed = '{seed}' and "
                f"tags.code_version = '{CODE_VERSION}' and attributes.status != 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=5,
            )
            failed = [r for r in ended if r.info.status == "FAILED"]  # a KILLED run (interrupted) is "not run"
            if failed:
                errors.append(failed[0].data.tags.get("error", "failed"))
        for seed, runs in sorted(by_seed.items()):
            res.runs[seed] = [r.info.run_id for r in runs]
            for run in runs:
                res.minutes += run.data.metrics.get("train/minutes", 0.0)
                res.parents.append(run.data.tags.get("mlflow.parentRunId", ""))
                res.commits[commit_of(run)] += 1
            for metric in sweep.metrics:
                vs = [run.data.metrics.get(f"val/{metric}") for run in runs]
                vs = [100 * v for v in vs if v is not None and math.isfinite(v)]
                if vs:
                    res.values.setdefault(metric, {})[seed] = statistics.fmean(vs)
        if errors:
            res.status, res.note = "failed", errors[0].splitlines()[0][:160]
        elif res.values:
            res.status = "done"
        out.append(res)
    return out


def used_runs(results: list[RowResult]) -> list[str]:
    """The ids of every run the results count."""
    return [i for r in results for ids in r.runs.values() for i in ids]


def commit_of(run) -> str:
    """The git commit a run's code came from (``+dirty``: uncommitted changes), as its tags recorded it."""
    tags = run.data.tags
    c = tags.get(GIT_COMMIT, "unrecorded")[:10]
    return c + ("+dirty" if tags.get(GIT_DIRTY) == "true" else "")


def resampled_values(sweep: Sweep, results: list[RowResult], client, n: int, seed: int = 0) -> list[dict]:
    """The key metric of every run recomputed on ``n`` resamples of the test images (the same resample for all
    rows and seeds, so the rows stay paired), from each run's logged matches (``matches.json.gz``); one
    ``{row: {seed: value}}`` per resample. Empty when a run has no such artifact (trained before it was logged)
    or the metric is not AP."""
    import numpy as np

    from ..eval.resample import ap

    if n <= 0 or sweep.metrics[0] != "AP" or sweep.task != "detection":
        return []
    per = {}
    for r in results:
        for s, ids in r.runs.items():
            for run_id in ids:
                per[run_id] = per_image_of(client, run_id)
                if per[run_id] is None:
                    return []
    if not per:
        return []
    common = sorted(set.intersection(*(set(p.image_ids) for p in per.values())))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        draw = [common[i] for i in rng.integers(0, len(common), len(common))]
        cache = {run_id: 100 * ap(p, draw) for run_id, p in per.items()}
        out.append(
            {
                r.row.label: {s: statistics.fmean(cache[i] for i in ids) for s, ids in r.runs.items()}
                for r in results
                if r.runs
            }
        )
    return out


def per_image_of(client, run_id: str):
    """A run's test-set matches per image (``eval.resample.PerImage``): from its logged detections
    (``matches.json.gz``), or from the compact form a restored run carries; None when it has neither (trained
    before they were logged)."""
    from ..eval.resample import COMPACT, evaluate, from_compact

    raw = _artifact_json(client, run_id, MATCHES)
    if raw is not None:
        return evaluate(raw["gt"], raw["detections"])
    compact = _artifact_json(client, run_id, COMPACT)
    return None if compact is None else from_compact(compact)


def compact_matches_of(client, run_id: str) -> dict | None:
    """``per_image_of`` in its compact JSON form (what a run record keeps), or None."""
    from ..eval.resample import to_compact

    per = per_image_of(client, run_id)
    return None if per is None else to_compact(per)


def _artifact_json(client, run_id: str, name: str) -> dict | None:
    import gzip
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise here
    try:
        with tempfile.TemporaryDirectory() as d:
            path = client.download_artifacts(run_id, name, d)
            return json.loads(gzip.decompress(Path(path).read_bytes()))
    except Exception:  # not logged (trained before the artifact existed), or the store lost it
        return None
