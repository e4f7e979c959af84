"""The GA search driver: an Optuna study on disk, trials trained through the same ``fit`` as run.py.

Every trial composes the base config (the command's overrides) plus its genes as ``++key=value``
overrides, trains ``search.fraction`` of the schedule (the paper ran its GA on the first 10% of the
training time; here the shortened run has its own, compressed schedule), and reports
``fitness = sum(search.fitness[k] * metric k)``. The study lives in ``search.storage`` (SQLite next to
the MLflow store by default), so the same command resumes it: finished trials are kept, trials left
RUNNING by a killed driver on this machine are marked FAIL and re-drawn. Several drivers (``JOBS``
processes of one driver, or several drivers on several machines with a shared storage) fill one
study; ``search.n_trials`` is the number of finished trials to reach (concurrent drivers may overshoot
it by their in-flight trials). The first trial of a new study is the base config's own values, so the
study shows the default hyperparameters' fitness beside the best.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import shlex
import socket
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from ... import __version__ as CODE_VERSION
from ...config import compose_config as compose_any
from ...errors import BagofError
from ...features import check_features
from ..launch import (
    TAG_KIND,
    Interrupted,
    WorkerPool,
    experiment_id,
    fail_abandoned,
    hardware,
    interruptible,
    open_store,
    owner_tags,
    store_lock,
)
from .evolve import EvolveSampler
from .results import plot_fitness, write_hparams
from .space import SearchSpace

log = logging.getLogger("bagof.experiments.search")
ORPHAN_AFTER = 2.0  # seconds: a RUNNING trial still without its driver's host/pid after this is orphaned


class SearchError(BagofError):
    pass


@dataclass
class SearchResult:
    study: str
    best_value: float
    best_params: dict[str, float]
    default_value: float | None
    complete: int
    failed: int
    hparams_path: Path | None
    parent_run_id: str
    interrupted: Interrupted | None = None


def compose_search(overrides: list[str]) -> DictConfig:
    cfg = compose_any(overrides)
    if "search" not in cfg:
        raise SearchError("no search settings: add +search=ga (conf/search/ga.yaml) to the command")
    return cfg


def holdout_overrides(cfg: DictConfig) -> list[str]:
    """The data the trials train and are scored on: ``data.tune`` (e.g. BCCD's train -> val), so the search
    never sees the split the tables report (BCCD's test). Without it the search scores on ``data.val`` and
    says so, since hyperparameters chosen on the reported split flatter the GA rows."""
    tune = cfg.data.get("tune")
    if not tune:
        log.warning(
            "data=%s has no data.tune hold-out: the search scores trials on data.val, the split the "
            "tables report (selection bias in the GA rows)",
            cfg.data.name,
        )
        return []
    flat = _flatten(OmegaConf.to_container(tune, resolve=True), "data")
    return [f"{k}={v}" for k, v in flat.items()]


def _flatten(node: dict, prefix: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def make_sampler(s: DictConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The evolve sampler draws each trial from (seed, trial number): reproducible, and distinct between
    drivers sharing a study (trial numbers are unique). NSGA-II draws from one stream per driver: its seed
    mixes in the host and process, so concurrent drivers do not propose the same candidates."""
    if s.sampler == "nsga2":
        seed = s.seed if s.seed is None else zlib.crc32(f"{s.seed}/{socket.gethostname()}/{os.getpid()}".encode())
        return optuna.samplers.NSGAIISampler(population_size=s.population, seed=seed)
    if s.sampler == "evolve":
        e = OmegaConf.to_container(s.evolve)
        return EvolveSampler(space.gains(), seed=s.seed, **e)
    raise SearchError(f"search.sampler={s.sampler!r}: choose nsga2 (Optuna's NSGA-II) or evolve (YOLOv5 scheme)")


def make_storage(url: str):
    """SQLite: waits on locks instead of failing when several processes write. ``journal:<file>``: Optuna's
    journal file storage (NFS-friendly). Anything else (``postgresql://...``) goes to Optuna as is."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


def fail_stale_trials(study: optuna.Study) -> int:
    """Trials RUNNING for a driver of this machine whose process is gone (killed search): FAIL. A trial without
    the driver's host/pid (killed between ``study.ask`` and recording them, a few milliseconds) is stale once
    it is older than ``ORPHAN_AFTER`` seconds."""
    n = 0
    host = socket.gethostname()
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "host" not in t.user_attrs:
            if t.datetime_start is None or (now - t.datetime_start).total_seconds() < ORPHAN_AFTER:
                continue
        elif t.user_attrs.get("host") != host:
            continue
        else:
            try:
                os.kill(int(t.user_attrs.get("pid", -1)), 0)
                continue  # its driver is alive
            except (OSError, ValueError):
                pass
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def _init_lock(cfg: DictConfig):
    from filelock import FileLock

    path = Path(cfg.paths.root) / ".bagof-search.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=600)


def fitness(metrics: dict[str, float], weights: dict[str, float]) -> float:
    return float(sum(w * metrics.get(k, 0.0) for k, w in weights.items()))


def run_search(overrides: list[str], command: str | None = None) -> SearchResult:
    cfg = compose_search(overrides)
    s = cfg.search
    space = SearchSpace(OmegaConf.to_container(s.space, resolve=True))
    weights = dict(s.fitness)
    with _init_lock(cfg):  # several drivers starting at once must not both create the stores' tables
        storage = make_storage(s.storage)
        study = optuna.create_study(
            storage=storage,
            sampler=make_sampler(s, space),
            study_name=s.study,
            direction="maximize",
            load_if_exists=True,
        )
    uri = cfg.logger.tracking_uri
    client = open_store(uri, cfg.paths.root)
    exp = experiment_id(client, s.experiment, cfg.logger.artifact_location, store_lock(uri, cfg.paths.root))
    fail_abandoned(client, [exp])
    holdout = holdout_overrides(cfg)
    ran = study.user_attrs.get("code_version")
    if study.user_attrs and ran != CODE_VERSION:  # its trials were trained by other code: not comparable
        raise SearchError(
            f"GA study {s.study!r} in {s.storage} holds trials of code {ran or 'before 0.5.0'}, this is "
            f"{CODE_VERSION}: start a new study (search.study={s.study}-{CODE_VERSION}) or delete the old one"
        )
    if not study.user_attrs:
        for k, v in {
            "code_version": CODE_VERSION,
            "data": cfg.data.name,
            "scale": cfg.scale.name,
            "fitness": str(weights),
            "sampler": s.sampler,
            "fraction": s.fraction,
            "overrides": " ".join(overrides),
            "holdout": " ".join(holdout) or "data.val",
        }.items():
            study.set_user_attr(k, v)
    stale = fail_stale_trials(study)
    if stale:
        log.warning("%s: %d trial(s) of a killed search marked FAIL; they will be drawn again", s.study, stale)
    if not study.trials:
        study.enqueue_trial(space.defaults(cfg), user_attrs={"defaults": True})
    epochs = max(1, math.ceil(s.fraction * cfg.train.max_epochs))
    base = [o for o in overrides if not o.startswith(("hydra", "search.", "+search", "experiment="))]
    base += holdout

    parent = client.create_run(
        exp,
        run_name=f"{s.study} {time.strftime('%Y-%m-%d %H:%M')}",
        tags={
            TAG_KIND: "search",
            "study": s.study,
            "sampler": s.sampler,
            "storage": s.storage,
            "hardware": hardware(),
            "command": command or " ".join(shlex.quote(a) for a in sys.argv),
            **owner_tags(),
        },
    )
    pid = parent.info.run_id
    client.log_param(pid, "trial_epochs", epochs)
    client.log_param(pid, "fitness", str(weights))
    jobs = max(1, int(s.jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = WorkerPool(jobs, threads, client)  # every trial in its own process, as the table rows
    failures, t0 = 0, time.time()
    interrupted = None

    def counted() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))

    def finish(trial, child_id, out) -> None:
        nonlocal failures
        if out["status"] == "FINISHED":
            value = fitness(out["metrics"], weights)
            for k, v in out["metrics"].items():
                trial.set_user_attr(k, v)
            try:
                study.tell(trial, value)
            except (RuntimeError, ValueError) as e:  # marked FAIL meanwhile by another driver's stale check
                log.error("trial %d: its result could not be recorded (%s)", trial.number, e)
            client.log_metric(child_id, "fitness", value)
            log.info(
                "trial %d: fitness %.4f (%s)",
                trial.number,
                value,
                "  ".join(f"{k} {v:.3f}" for k, v in out["metrics"].items()),
            )
        else:
            failures += 1
            study.tell(trial, state=TrialState.FAIL)
            client.set_tag(child_id, "error", out.get("error", "")[:500])
            client.set_terminated(child_id, "FAILED")
            log.error("trial %d FAILED: %s", trial.number, out.get("error"))

    with interruptible():
        try:
            while True:
                while pool.free() > 0 and counted() < s.n_trials and failures <= s.max_failures:
                    trial = study.ask(space.distributions())
                    trial.set_user_attr("host", socket.gethostname())
                    trial.set_user_attr("pid", os.getpid())
                    child = client.create_run(
                        exp,
                        run_name=f"{s.study} #{trial.number}",
                        tags={
                            "mlflow.parentRunId": pid,
                            TAG_KIND: "trial",
                            "study": s.study,
                            "trial": str(trial.number),
                            **owner_tags(),
                        },
                    )
                    cid = child.info.run_id
                    for k, v in trial.params.items():
                        client.log_param(cid, f"ga.{k}", v)
                    try:
                        tcfg = compose_any(
                            base
                            + space.overrides(trial.params)
                            + [f"train.max_epochs={epochs}", f"experiment={s.experiment}"]
                        )
                        check_features(tcfg)
                        y = OmegaConf.to_yaml(tcfg, resolve=True)
                    except Exception as e:  # a gene that makes a bad config: the trial fails, the search goes on
                        finish(trial, cid, {"status": "FAILED", "error": f"config: {type(e).__name__}: {e}"})
                        continue
                    pool.start((trial, cid), y, cid)
                if not pool.running:
                    break
                for (trial, cid), out in pool.wait(1.0):
                    finish(trial, cid, out)
        except Interrupted as e:
            interrupted = e
            for (trial, cid), out in pool.stop(f"interrupted by {e} (the search was stopped)"):
                if out["status"] == "FINISHED" and out.get("metrics"):
                    finish(trial, cid, out)  # it ended before the stop reached it: its result counts
                else:
                    study.tell(trial, state=TrialState.FAIL)  # drawn again when the search resumes
            log.error("%s: interrupted by %s: the trials in flight were killed and marked FAIL", s.study, e)
    if failures > s.max_failures:
        log.error("%s: stopped after %d failed trials (search.max_failures=%d)", s.study, failures, s.max_failures)
    return _conclude(study, cfg, client, pid, time.time() - t0, interrupted)


def _conclude(
    study: optuna.Study, cfg: DictConfig, client, pid: str, seconds: float, interrupted: Interrupted | None = None
) -> SearchResult:
    s = cfg.search
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if interrupted is not None:  # an unfinished search writes no hyperparameters: resume it with the same command
        client.log_metric(pid, "minutes", seconds / 60)
        client.set_terminated(pid, "KILLED")
        log.error(
            "%s: %d trials finished so far; run the same command to resume (nothing written)", s.study, len(complete)
        )
        return SearchResult(
            s.study,
            max((t.value for t in complete), default=math.nan),
            {},
            None,
            len(complete),
            len(failed),
            None,
            pid,
            interrupted,
        )
    if not complete:
        client.set_terminated(pid, "FAILED")
        raise SearchError(f"study {s.study!r} has no finished trial ({len(failed)} failed): see the MLflow runs")
    best = max(complete, key=lambda t: t.value)
    default = next((t.value for t in complete if t.user_attrs.get("defaults")), None)
    space = SearchSpace(OmegaConf.to_container(s.space, resolve=True))
    out = Path(s.output)
    write_hparams(out, best.params, space, study, cfg, best, default)
    plot = Path(cfg.paths.root) / "reports" / "ga" / f"{s.study}.png"
    plot_fitness(complete, plot, s.study)
    client.log_metric(pid, "best_fitness", best.value)
    if default is not None:
        client.log_metric(pid, "default_fitness", default)
    client.log_metric(pid, "minutes", seconds / 60)
    client.set_tag(pid, "best_trial", str(best.number))
    for k, v in best.params.items():
        client.log_param(pid, f"best.{k}", v)
    client.log_artifact(pid, str(out))
    client.log_artifact(pid, str(plot))
    client.set_terminated(pid, "FINISHED")
    log.info(
        "%s: best trial %d, fitness %.4f (defaults: %s); %d finished, %d failed; wrote %s",
        s.study,
        best.number,
        best.value,
        f"{default:.4f}" if default is not None else "n/a",
        len(complete),
        len(failed),
        out,
    )
    return SearchResult(s.study, best.value, dict(best.params), default, len(complete), len(failed), out, pid)
