"""Runs a sweep: every (row, seed) through the same ``fit`` as ``run.py``, as MLflow child runs of one
parent run per invocation, reusing FINISHED runs with the same config hash, seed and code version.

Jobs run in fresh worker processes (``JOBS`` at a time) through ``bagof.experiments.launch``: a crash in one row is
recorded as FAILED and the sweep goes on; Ctrl-C or SIGTERM kills the jobs in flight (KILLED), starts no
other, and the report is written for what finished. A child run is created when its job starts, under a
claim on the store: an invocation that finds the same (config hash, seed) RUNNING for another live
invocation waits for it and reuses its result instead of training it twice.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from ..identity import CODE_VERSION, config_hash
from .invocation import Invocation, compose_pretrain, compose_row
from .launch import TAG_KIND, Interrupted, WorkerPool, fail_abandoned, hardware, interruptible, owner_alive, owner_tags
from .spec import Row, Sweep
from .store import PRETRAIN_KINDS, Store, backbone_from, find_finished, find_row, open_sweep_store

log = logging.getLogger("bagof.experiments")
WAIT_POLL = 5.0  # seconds between looks at a run another invocation is training


@dataclass
class Job:
    """One run to train: its record (shared with the report), its resolved config and identity."""

    rec: dict
    cfg_yaml: str
    chash: str
    seed: int
    kind: str = "row"  # "row" or "pretrain"
    tags: dict = field(default_factory=dict)


def run_sweep(sweep: Sweep, inv: Invocation) -> tuple[str, list[dict], Interrupted | None]:
    """Trains what is missing; returns (parent run id, one record per row and seed, the interruption if any)."""
    st = open_sweep_store(sweep.name)
    client = st.client
    fail_abandoned(client, [st.exp_id])
    cmd = inv.command or " ".join(shlex.quote(a) for a in sys.argv)
    parent = client.create_run(
        st.exp_id,
        run_name=f"{sweep.name} {time.strftime('%Y-%m-%d %H:%M')}",
        tags={
            TAG_KIND: "table",
            "scale": inv.scale,
            "data": inv.data,
            "seeds": str(inv.seeds),
            "seeds_rule": "design" if inv.follows(sweep) else "exploratory",
            "design": sweep.design.describe(),
            "extra_overrides": " ".join(inv.extra),
            "command": cmd,
            "code_version": CODE_VERSION,
            "hardware": hardware(),
            **owner_tags(),
        },
    )
    st.parent_id = pid = parent.info.run_id
    for k, v in {
        "scale": inv.scale,
        "data": inv.data,
        "seeds": inv.seeds,
        "jobs": inv.jobs,
        "force": inv.force,
    }.items():
        client.log_param(pid, k, v)
    t0 = time.time()
    threads = max(1, (os.cpu_count() or 1) // max(1, inv.jobs))
    records: list[dict] = []
    trained = [0]
    interrupted = None
    with interruptible():
        try:
            pre = _pretrain_jobs(sweep, inv, st)
            trained[0] += _train(pre, inv, threads, st)
            jobs = _row_jobs(sweep, inv, st, records)
            log.info(
                "%s: %d runs to train, %d reused, %d not implemented",
                sweep.name,
                len(jobs),
                sum(1 for r in records if r.get("cached")),
                sum(1 for r in records if r.get("reason")),
            )
            trained[0] += _train(jobs, inv, threads, st)
        except Interrupted as e:
            interrupted = e
            log.error("%s: interrupted by %s: the runs in flight were killed, no other run was started", sweep.name, e)
    client.log_metric(pid, "total_minutes", (time.time() - t0) / 60)
    client.log_metric(pid, "trained_runs", trained[0])
    return pid, records, interrupted


def _row_jobs(sweep: Sweep, inv: Invocation, st: Store, records: list[dict]) -> list[Job]:
    jobs = []
    for row in _by_priority(sweep, inv):
        reason = row.missing()
        for seed in range(inv.seeds_of(row.label)):
            rec = {"row": row.label, "seed": seed, "status": "NOT_IMPLEMENTED", "reason": reason}
            records.append(rec)
            if reason:
                continue
            try:
                cfg = compose_row(sweep, row, inv, seed, backbone_from(st.client, sweep, row, inv, seed))
                chash = config_hash(cfg)  # resolves every interpolation (e.g. missing optimized anchors)
            except Exception as e:  # a broken override or value, a failed classifier: this row fails, the others run
                what = "pretraining" if isinstance(e, LookupError) else "config"
                rec.update(status="FAILED", error=f"{what}: {type(e).__name__}: {str(e).splitlines()[0]}")
                run = st.client.create_run(
                    st.exp_id,
                    run_name=f"{row.label} s{seed}",
                    tags={
                        "mlflow.parentRunId": st.parent_id,
                        TAG_KIND: "row",
                        "row": row.label,
                        "seed": str(seed),
                        "code_version": CODE_VERSION,
                        "error": rec["error"][:500],
                    },
                )
                st.client.set_terminated(run.info.run_id, "FAILED")
                log.error("%s seed %d FAILED: %s", row.label, seed, rec["error"])
                continue
            rec["config_hash"] = chash
            cached = _reusable(find_row(st.client, st.exp_id, chash, seed), inv, st)
            if cached is not None:
                rec.update(status="FINISHED", run_id=cached.info.run_id, cached=True)
                log.info("%s seed %d: reusing finished run %s", row.label, seed, cached.info.run_id)
                continue
            rec.update(status="QUEUED", cached=False)
            jobs.append(Job(rec, OmegaConf.to_yaml(cfg, resolve=True), chash, seed))
    return jobs


def _pretrain_jobs(sweep: Sweep, inv: Invocation, st: Store) -> list[Job]:
    """The classifiers that rows with ``pretrain`` start from (Table 6), unless a finished identical run
    exists in any experiment; identical classifiers of several rows are trained once. A failed one fails
    its rows later (they find no finished classifier), not the sweep."""
    jobs, seen = [], set()
    for row in _by_priority(sweep, inv):
        if row.pretrain is None or row.missing():
            continue
        for seed in range(inv.seeds_of(row.label)):
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
            cached = _reusable(find_finished(st.client, None, chash, seed, PRETRAIN_KINDS), inv, st)
            if cached is not None:
                log.info("%s seed %d: reusing finished classifier %s", label, seed, cached.info.run_id)
                continue
            jobs.append(
                Job({"row": label, "seed": seed}, OmegaConf.to_yaml(cfg, resolve=True), chash, seed, "pretrain")
            )
    if jobs:
        log.info("%s: %d classifiers to pretrain first", sweep.name, len(jobs))
    return jobs


def _reusable(run, inv: Invocation, st: Store):
    """A finished run to reuse: any, or with FORCE only one this invocation trained (a row and a classifier
    it shares with another row must not be retrained twice)."""
    if run is None or (inv.force and run.data.tags.get("mlflow.parentRunId") != st.parent_id):
        return None
    return run


def _by_priority(sweep: Sweep, inv: Invocation) -> list[Row]:
    """The rows, the baseline first (every contrast needs it)."""
    return sorted(sweep.rows, key=lambda r: r.label != sweep.baseline)


def claim(st: Store, job: Job, force: bool) -> str:
    """Under the store lock: ``reuse`` (a finished run appeared), ``wait`` (another live invocation is
    training it now), or ``start`` (this invocation's child run is created and recorded in ``job.rec``)."""
    c = st.client
    with st.lock:
        # Running first, finished second: another sweep's worker ends its run without this lock, so in the
        # other order a run that finishes between the two looks is seen as neither and trained twice.
        busy = c.search_runs(  # in any experiment: another sweep may be training the same row
            [e.experiment_id for e in c.search_experiments()],
            f"tags.config_hash = '{job.chash}' and tags.seed = '{job.seed}' and "
            f"tags.code_version = '{CODE_VERSION}' and attributes.status = 'RUNNING'",
        )
        done = (
            find_finished(c, None, job.chash, job.seed, PRETRAIN_KINDS)
            if job.kind == "pretrain"
            else find_row(c, st.exp_id, job.chash, job.seed)
        )
        if done is not None and (not force or done.data.tags.get("mlflow.parentRunId") == st.parent_id):
            job.rec.update(status="FINISHED", run_id=done.info.run_id, cached=True)
            return "reuse"
        if any(r.data.tags.get("mlflow.parentRunId") != st.parent_id and owner_alive(r) for r in busy):
            return "wait"
        run = c.create_run(
            st.exp_id,
            run_name=f"{job.rec['row']} s{job.seed}",
            tags={
                "mlflow.parentRunId": st.parent_id,
                TAG_KIND: job.kind,
                "row": job.rec["row"],
                "seed": str(job.seed),
                "config_hash": job.chash,
                "code_version": CODE_VERSION,
                **owner_tags(),
            },
        )
    job.rec.update(run_id=run.info.run_id, status="RUNNING", cached=False)
    return "start"


def _train(jobs: list[Job], inv: Invocation, threads: int, st: Store) -> int:
    """Runs the jobs, ``inv.jobs`` at a time; returns how many it trained. A failure is recorded on its
    run and the others go on; ``Interrupted`` kills the ones in flight and leaves the rest unstarted."""
    if not jobs:
        return 0
    pool = WorkerPool(inv.jobs, threads, st.client, inv.launcher, inv.slurm, lock=st.lock)
    pending, waiting, started = deque(jobs), [], 0
    next_look = 0.0
    try:
        while pending or waiting or pool.running:
            while pending and pool.free() > 0:
                job = pending.popleft()
                decision = claim(st, job, inv.force)
                if decision == "reuse":
                    log.info(
                        "%s seed %d: reusing run %s (finished meanwhile)", job.rec["row"], job.seed, job.rec["run_id"]
                    )
                elif decision == "wait":
                    log.info(
                        "%s seed %d: another invocation is training it; waiting for its result",
                        job.rec["row"],
                        job.seed,
                    )
                    waiting.append(job)
                else:
                    pool.start(job, job.cfg_yaml, job.rec["run_id"])
                    started += 1
            for job, out in pool.wait(1.0):
                _record(job, out, st.client)
            if waiting and not pending and time.time() >= next_look:
                pending.extend(waiting)  # look again: finished (reuse), failed (train it here) or still running
                waiting.clear()
                next_look = time.time() + WAIT_POLL
            elif waiting and not pool.running and not pending:
                time.sleep(0.5)
    except Interrupted as e:
        for job, out in pool.stop(f"interrupted by {e} (the sweep was stopped)"):
            if out["status"] == "KILLED":
                job.rec.update(status="KILLED", error=f"interrupted by {e}")
            else:  # it ended before the stop reached it: its run keeps its status and counts
                job.rec.update(status=out["status"], error=out.get("error"))
        for job in list(pending) + waiting:
            job.rec.update(status="NOT_STARTED")
        raise
    return started


def _record(job: Job, out: dict, client) -> None:
    rec = job.rec
    rec.update(status=out["status"], error=out.get("error"))
    if out["status"] != "FINISHED":
        client.set_tag(rec["run_id"], "error", out.get("error", "")[:500])
        client.set_terminated(rec["run_id"], "FAILED")
        log.error("%s seed %d FAILED: %s", rec["row"], rec["seed"], out.get("error"))
    else:
        log.info(
            "%s seed %d done: %s", rec["row"], rec["seed"], "  ".join(f"{k} {v:.3f}" for k, v in out["metrics"].items())
        )
