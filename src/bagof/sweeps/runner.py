"""Runs a sweep: every (row, seed) through the same ``fit`` as ``run.py``, as MLflow child runs of one
parent run per invocation, reusing FINISHED runs with the same config hash, seed and code version.

Each job runs in a fresh worker process (``JOBS`` at a time): a crash or a leak in one row cannot take
the others or the driver down, and the driver records it as FAILED and goes on. ``launcher`` picks
where: ``local`` (a process pool on this machine), ``slurm`` (one SLURM job per row and seed through
submitit; ``slurm`` options such as ``partition=gpu gpus_per_node=1 timeout_min=720``), or
``submitit-local`` (the same submitit path as local processes, to try a cluster setup on a laptop).
"""
from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import mlflow
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from ..config import CONFIG_DIR
from ..features import check_features
from .cache import CODE_VERSION, config_hash
from .spec import TASKS, Row, Sweep

log = logging.getLogger("bagof.sweeps")

TAG_KIND = "bagof.kind"  # "table" on parent runs, "row" on child runs


@dataclass
class Invocation:
    """What a `make tableN` call asked for; stored as the parent run's params and tags."""
    scale: str
    data: str
    seeds: int
    jobs: int = 1
    force: bool = False
    extra: tuple[str, ...] = ()
    launcher: str = "local"
    slurm: tuple[str, ...] = ()  # key=value options for submitit (partition=..., gpus_per_node=...)
    command: str = ""            # the command line, for the report's header

    def overrides(self, sweep: Sweep, row: Row, seed: int) -> list[str]:
        return [f"task={TASKS[sweep.task]}", f"data={self.data}", f"scale={self.scale}", *sweep.overrides,
                *row.hydra_overrides(self.scale), *self.extra, f"seed={seed}", f"experiment={sweep.name}"]


def compose_row(sweep: Sweep, row: Row, inv: Invocation, seed: int, extra: list[str] = ()) -> DictConfig:
    """The row's config; contradictory toggles or a table run without MLflow fail here, at config time."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=inv.overrides(sweep, row, seed) + list(extra))
    check_features(cfg)
    if "_target_" not in cfg.logger:
        raise ValueError("table rows are logged to MLflow: remove logger=none from the overrides")
    return cfg


def tracking_uri() -> str:
    """The store the logger config resolves to (env var, else the repo-root SQLite file)."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["logger=mlflow"])
    return cfg.logger.tracking_uri


def experiment_id(client: mlflow.MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def find_finished(client, exp_id: str | None, chash: str, seed: int, kinds=("row",)):
    """The latest FINISHED run of this config and seed under this code version: in ``exp_id``, or in any
    experiment when None (a pretrained classifier is the same run whichever table trained it)."""
    ids = [exp_id] if exp_id else [e.experiment_id for e in client.search_experiments()]
    for k in kinds:
        runs = client.search_runs(
            ids, f"tags.config_hash = '{chash}' and tags.seed = '{seed}' and tags.code_version = '{CODE_VERSION}' "
            f"and tags.`{TAG_KIND}` = '{k}' and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
            max_results=1)
        if runs:
            return runs[0]
    return None


PRETRAIN_KINDS = ("pretrain", "row")  # a classifier row of Table 2/3 serves as Table 6's pretraining too


def find_row(client, exp_id: str, chash: str, seed: int):
    """A row's finished run: in its table's experiment, else a classifier that Table 6 pretrained (same run)."""
    return find_finished(client, exp_id, chash, seed) or find_finished(client, None, chash, seed, ("pretrain",))


def compose_pretrain(sweep: Sweep, row: Row, inv: Invocation, seed: int) -> DictConfig:
    """The classifier a Table 6 row starts from: its own data (default the CIFAR-10 subset), task=classify,
    its toggles; not the table's detection overrides nor the command's extra overrides."""
    pre = row.pretrain_row()
    cls_sweep = replace(sweep, task="classification", overrides=[])
    return compose_row(cls_sweep, pre, replace(inv, data=row.pretrain.get("data", "cifar10_subset"), extra=()), seed)


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


def _job(cfg_yaml: str, run_id: str, threads: int) -> dict:
    """Worker process: train one (row, seed) into the given MLflow run."""
    import torch

    from ..train import fit

    cfg = OmegaConf.create(cfg_yaml)
    with open_dict(cfg):
        cfg.train.threads = threads
        cfg.train.progress_bar = False
        cfg.logger.run_id = run_id
    try:
        torch.set_num_threads(threads)
        result = fit(cfg)
        return {"status": "FINISHED", "metrics": result.metrics, "seconds": result.seconds}
    except BaseException as e:  # recorded as FAILED by the driver; the sweep goes on
        first = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return {"status": "FAILED", "error": first[:500], "trace": traceback.format_exc()[-4000:]}


def run_sweep(sweep: Sweep, inv: Invocation) -> tuple[str, list[dict]]:
    """Trains what is missing; returns (parent run id, one record per row and seed)."""
    uri = tracking_uri()
    client = mlflow.MlflowClient(uri)
    art = None
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        art = compose("config").logger.artifact_location
    exp_id = experiment_id(client, sweep.name, art)
    cmd = inv.command or " ".join(shlex.quote(a) for a in sys.argv)
    parent = client.create_run(exp_id, run_name=f"{sweep.name} {time.strftime('%Y-%m-%d %H:%M')}", tags={
        TAG_KIND: "table", "scale": inv.scale, "data": inv.data, "seeds": str(inv.seeds),
        "extra_overrides": " ".join(inv.extra), "command": cmd, "code_version": CODE_VERSION,
        "hardware": hardware()})
    pid = parent.info.run_id
    for k, v in {"scale": inv.scale, "data": inv.data, "seeds": inv.seeds, "jobs": inv.jobs, "force": inv.force}.items():
        client.log_param(pid, k, v)
    t0 = time.time()
    jobs = max(1, inv.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    _pretrain(sweep, inv, client, exp_id, pid, threads)
    records, todo = [], []
    for row in sweep.rows:
        reason = row.missing()
        for seed in range(inv.seeds):
            rec = {"row": row.label, "seed": seed, "status": "NOT_IMPLEMENTED", "reason": reason}
            records.append(rec)
            if reason:
                continue
            try:
                cfg = compose_row(sweep, row, inv, seed, backbone_from(client, sweep, row, inv, seed))
                chash = config_hash(cfg)  # resolves every interpolation (e.g. missing optimized anchors)
            except Exception as e:  # a broken override or value, a failed classifier: this row fails, the others run
                what = "pretraining" if isinstance(e, LookupError) else "config"
                rec.update(status="FAILED", error=f"{what}: {type(e).__name__}: {str(e).splitlines()[0]}")
                run = client.create_run(exp_id, run_name=f"{row.label} s{seed}", tags={
                    "mlflow.parentRunId": pid, TAG_KIND: "row", "row": row.label, "seed": str(seed),
                    "code_version": CODE_VERSION, "error": rec["error"][:500]})
                client.set_terminated(run.info.run_id, "FAILED")
                log.error("%s seed %d FAILED: %s", row.label, seed, rec["error"])
                continue
            rec["config_hash"] = chash
            cached = None if inv.force else find_row(client, exp_id, chash, seed)
            if cached is not None:
                rec.update(status="FINISHED", run_id=cached.info.run_id, cached=True)
                log.info("%s seed %d: reusing finished run %s", row.label, seed, cached.info.run_id)
                continue
            child = client.create_run(exp_id, run_name=f"{row.label} s{seed}", tags={
                "mlflow.parentRunId": pid, TAG_KIND: "row", "row": row.label, "seed": str(seed),
                "config_hash": chash, "code_version": CODE_VERSION})
            rec.update(run_id=child.info.run_id, cached=False)
            todo.append((rec, OmegaConf.to_yaml(cfg, resolve=True)))
    log.info("%s: %d runs to train, %d reused, %d not implemented", sweep.name, len(todo),
             sum(1 for r in records if r.get("cached")), sum(1 for r in records if r.get("reason")))
    _train(todo, inv, threads, client)
    client.log_metric(pid, "total_minutes", (time.time() - t0) / 60)
    client.log_metric(pid, "trained_runs", len(todo))
    return pid, records


def _pretrain(sweep: Sweep, inv: Invocation, client, exp_id: str, pid: str, threads: int) -> None:
    """Trains the classifiers that rows with ``pretrain`` start from (Table 6), unless a finished identical
    run exists in any experiment; identical classifiers of several rows are trained once. A failed one
    fails its rows later (they find no finished classifier), not the sweep."""
    todo, seen = [], set()
    for row in sweep.rows:
        if row.pretrain is None or row.missing():
            continue
        for seed in range(inv.seeds):
            label = row.pretrain_row().label
            try:
                cfg = compose_pretrain(sweep, row, inv, seed)
                chash = config_hash(cfg)
            except Exception as e:
                log.error("%s seed %d: config: %s", label, seed, str(e).splitlines()[0])
                continue
            if (chash, seed) in seen:
                continue
            seen.add((chash, seed))
            cached = None if inv.force else find_finished(client, None, chash, seed, PRETRAIN_KINDS)
            if cached is not None:
                log.info("%s seed %d: reusing finished classifier %s", label, seed, cached.info.run_id)
                continue
            child = client.create_run(exp_id, run_name=f"{label} s{seed}", tags={
                "mlflow.parentRunId": pid, TAG_KIND: "pretrain", "row": label, "seed": str(seed),
                "config_hash": chash, "code_version": CODE_VERSION})
            todo.append(({"row": label, "seed": seed, "run_id": child.info.run_id}, OmegaConf.to_yaml(cfg, resolve=True)))
    if todo:
        log.info("%s: %d classifiers to pretrain first", sweep.name, len(todo))
    _train(todo, inv, threads, client)


def _train(todo, inv: Invocation, threads: int, client) -> None:
    """Runs the jobs; a failure is recorded on its MLflow run (and in its record), the others go on."""
    for rec, out in _execute(todo, inv, threads):
        rec.update(status=out["status"], error=out.get("error"))
        if out["status"] != "FINISHED":
            client.set_tag(rec["run_id"], "error", out.get("error", ""))
            client.set_terminated(rec["run_id"], "FAILED")
            log.error("%s seed %d FAILED: %s", rec["row"], rec["seed"], out.get("error"))
        else:
            log.info("%s seed %d done: %s", rec["row"], rec["seed"],
                     "  ".join(f"{k} {v:.3f}" for k, v in out["metrics"].items()))


def _execute(todo, inv: Invocation, threads: int):
    """Yields (record, outcome) as jobs end, whichever launcher runs them."""
    if inv.launcher == "local":
        # a fresh process per job (spawn: no forked torch/MLflow state)
        with ProcessPoolExecutor(max(1, inv.jobs), mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
            futures = {pool.submit(_job, y, rec["run_id"], threads): rec for rec, y in todo}
            for fut in as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except BaseException as e:  # the worker process itself died
                    yield futures[fut], {"status": "FAILED", "error": f"worker died: {type(e).__name__}: {e}"}
        return
    if inv.launcher not in ("slurm", "submitit-local"):
        raise ValueError(f"launcher {inv.launcher!r}: choose local, slurm or submitit-local")
    import submitit

    folder = Path(os.environ.get("BAGOF_ROOT", ".")) / "outputs" / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if inv.launcher == "submitit-local" else "slurm")
    params = {"timeout_min": 24 * 60, "cpus_per_task": threads}
    for kv in inv.slurm:
        key, _, value = kv.partition("=")
        params[key if key in ("timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "nodes", "name")
               else f"slurm_{key}"] = int(value) if value.isdigit() else value
    executor.update_parameters(**params)
    jobs = [(rec, executor.submit(_job, y, rec["run_id"], threads)) for rec, y in todo]
    for rec, job in jobs:
        try:
            yield rec, job.result()
        except BaseException as e:  # the cluster job died (killed, out of time, node failure)
            yield rec, {"status": "FAILED", "error": f"job {job.job_id} died: {type(e).__name__}: {str(e)[:300]}"}


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"
