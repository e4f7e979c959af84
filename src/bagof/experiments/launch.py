"""Launching training runs for the table sweeps and the GA search: the tracking store, worker processes,
signals, and claims that keep concurrent invocations from training the same run twice.

- **Store.** The MLflow tracking URI is read once from the composed config (``logger.tracking_uri``). The
  first touch of a store (MLflow creates its SQLite schema then) and every claim happen under a file lock
  beside the store, so two invocations started together on a store that does not exist yet both work.
- **Workers.** Each job trains in a fresh process (``spawn``: no forked torch/MLflow state); a crash in one
  cannot take the others or the driver down. ``launcher``: ``local`` processes, or SLURM / submitit's local
  mode through submitit.
- **Signals.** Inside ``interruptible()``, SIGINT (Ctrl-C) and SIGTERM raise ``Interrupted`` in the driver;
  ``WorkerPool.stop`` then terminates the jobs in flight (their runs are marked KILLED with the reason) and
  starts nothing more. Workers ignore SIGINT themselves: the terminal sends Ctrl-C to the whole process group,
  and the driver, not each worker, decides what happens.
- **Ownership.** Runs the driver creates carry ``bagof.host`` / ``bagof.pid`` and a ``bagof.heartbeat`` the
  driver refreshes while they train. ``fail_abandoned`` marks FAILED the runs of dead invocations (a
  SIGKILL, a power cut) left RUNNING; ``live_claim`` tells whether another invocation is training a run now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import connection, get_context
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("bagof.experiments.launch")

TAG_KIND = "bagof.kind"  # "table"/"search" on parent runs, "row"/"pretrain"/"trial" on child runs
HOST, PID, HEARTBEAT = "bagof.host", "bagof.pid", "bagof.heartbeat"
HEARTBEAT_EVERY = 60.0  # seconds between heartbeats of the runs in flight
HEARTBEAT_STALE = 600.0  # a run on another host whose heartbeat is older than this is abandoned


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the driver; ``exit_code`` is the shell's 128 + signal number. A BaseException,
    as KeyboardInterrupt: the ``except Exception`` that records one broken row as FAILED and goes on must not
    swallow it (a signal landing while a row's config was composed was lost that way)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


@contextmanager
def interruptible():
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread while inside (restored on exit)."""

    def handler(signum, frame):
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- the store ---------------------------------------------------------------------------------------------


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """The MLflow store of ``cfg`` (composed with ``logger=mlflow`` when not given or logging is off)."""
    if cfg is None or "tracking_uri" not in (cfg.get("logger") or {}):
        from ..config import compose_config

        cfg = compose_config(["logger=mlflow"])
    return cfg.logger.tracking_uri


def store_lock(uri: str, root: str | Path | None = None):
    """A file lock for the store: beside a SQLite file, else under ``root`` (one machine's invocations)."""
    from filelock import FileLock

    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///") + ".lock")
    else:
        path = Path(root or os.getcwd()) / ".bagof-store.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=600)


def open_store(uri: str, root: str | Path | None = None) -> mlflow.MlflowClient:
    """A client on ``uri``; the store (and its schema) is created under the lock, once."""
    with store_lock(uri, root):
        client = mlflow.MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates a new SQLite store's tables now, inside the lock
    return client


def experiment_id(client: mlflow.MlflowClient, name: str, artifact_location: str | None, lock=None) -> str:
    def get_or_create():
        exp = client.get_experiment_by_name(name)
        return (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(name, artifact_location=artifact_location)
        )

    if lock is None:
        return get_or_create()
    with lock:
        return get_or_create()


def owner_tags() -> dict[str, str]:
    return {HOST: socket.gethostname(), PID: str(os.getpid()), HEARTBEAT: str(time.time())}


def _pid_alive(pid: str | None) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def owner_alive(run) -> bool:
    """Whether the invocation that created ``run`` still runs: its pid on this host, a fresh heartbeat elsewhere."""
    tags = run.data.tags
    if tags.get(HOST) == socket.gethostname():
        return _pid_alive(tags.get(PID))
    if HOST not in tags:  # created before ownership tags existed: judge by its age
        return time.time() - run.info.start_time / 1000 < HEARTBEAT_STALE
    return time.time() - float(tags.get(HEARTBEAT, 0)) < HEARTBEAT_STALE


def fail_abandoned(client, exp_ids: list[str]) -> int:
    """Marks FAILED (tag ``error``) the runs left RUNNING by invocations that are gone; returns how many."""
    n = 0
    for run in client.search_runs(exp_ids, "attributes.status = 'RUNNING'", max_results=5000):
        if owner_alive(run):
            continue
        tags = run.data.tags
        client.set_tag(
            run.info.run_id,
            "error",
            f"abandoned: its invocation (pid {tags.get(PID, '?')} on {tags.get(HOST, '?')}) ended without finishing it",
        )
        client.set_terminated(run.info.run_id, "FAILED")
        n += 1
    if n:
        log.warning("%d run(s) left RUNNING by invocations that are gone were marked FAILED", n)
    return n


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


# --- one job ------------------------------------------------------------------------------------------------


def train_job(cfg_yaml: str, run_id: str, threads: int) -> dict:
    """Trains one composed config into the MLflow run ``run_id``; the outcome as a dict, never an exception."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle (it terminates us)
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


def _worker(conn, job, cfg_yaml: str, run_id: str, threads: int) -> None:
    # a process group of its own: the driver's stop reaches every process this job starts (torch.compile's
    # compile workers among them) with one signal, and none is left running after it
    os.setpgrp()
    out = job(cfg_yaml, run_id, threads)
    conn.send(out)
    conn.close()


# --- the pool -----------------------------------------------------------------------------------------------


@dataclass
class _Running:
    key: object
    run_id: str
    handle: object  # a Process (local) or a submitit Job
    conn: object = None
    last_beat: float = field(default_factory=time.time)


class WorkerPool:
    """At most ``size`` jobs at a time, each in its own process; ``wait`` yields the ones that ended."""

    def __init__(
        self, size: int, threads: int, client=None, launcher: str = "local", slurm=(), folder=None, lock=None, job=None
    ):
        if launcher not in ("local", "slurm", "submitit-local"):
            raise ValueError(f"launcher {launcher!r}: choose local, slurm or submitit-local")
        self.size, self.threads, self.client, self.launcher = max(1, size), threads, client, launcher
        self.running: list[_Running] = []
        self.lock = lock  # the store's lock: a stop reads and sets a run's status under it
        self.job = job or train_job  # what a worker runs: (cfg_yaml, run_id, threads) -> outcome dict
        self._ctx = get_context("spawn")
        self._executor = None
        if launcher != "local":
            import submitit

            folder = Path(folder or Path(os.environ.get("BAGOF_ROOT", ".")) / "outputs" / "submitit") / "%j"
            self._executor = submitit.AutoExecutor(
                folder=folder, cluster="local" if launcher == "submitit-local" else "slurm"
            )
            params = {"timeout_min": 24 * 60, "cpus_per_task": threads}
            for kv in slurm:
                k, _, v = kv.partition("=")
                params[
                    k
                    if k in ("timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "nodes", "name")
                    else f"slurm_{k}"
                ] = int(v) if v.isdigit() else v
            self._executor.update_parameters(**params)

    def free(self) -> int:
        return self.size - len(self.running)

    def start(self, key, cfg_yaml: str, run_id: str) -> None:
        if self._executor is not None:
            job = self._executor.submit(self.job, cfg_yaml, run_id, self.threads)
            self.running.append(_Running(key, run_id, job))
            return
        recv, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_worker, args=(send, self.job, cfg_yaml, run_id, self.threads), daemon=True)
        proc.start()
        send.close()
        self.running.append(_Running(key, run_id, proc, recv))

    def wait(self, timeout: float = 1.0) -> list[tuple[object, dict]]:
        """The jobs that ended within ``timeout`` seconds, as (key, outcome)."""
        self._heartbeat()
        if not self.running:
            return []
        if self._executor is not None:
            ended = [r for r in self.running if r.handle.done()]
            if not ended:
                time.sleep(timeout)
        else:
            ready = connection.wait([r.handle.sentinel for r in self.running] + [r.conn for r in self.running], timeout)
            ended = [r for r in self.running if r.handle.sentinel in ready or r.conn in ready]
        out = []
        for r in ended:
            outcome = self._outcome(r)
            if outcome is None:  # the pipe spoke, the process has not quite exited: next round
                continue
            self.running.remove(r)
            out.append((r.key, outcome))
        return out

    def _outcome(self, r: _Running) -> dict | None:
        if self._executor is not None:
            try:
                return r.handle.result()
            except BaseException as e:  # the cluster job died (killed, out of time, node failure)
                return {"status": "FAILED", "error": f"job {r.handle.job_id} died: {type(e).__name__}: {str(e)[:300]}"}
        if r.conn.poll():
            try:
                out = r.conn.recv()
            except EOFError:
                out = None
            r.handle.join(10)
            if out is not None:
                return out
        if r.handle.is_alive():
            return None
        r.handle.join()
        return {"status": "FAILED", "error": f"worker died (exit code {r.handle.exitcode})"}

    def _heartbeat(self) -> None:
        now = time.time()
        for r in self.running:
            if self.client is not None and now - r.last_beat > HEARTBEAT_EVERY:
                r.last_beat = now
                try:
                    self.client.set_tag(r.run_id, HEARTBEAT, str(now))
                except Exception as e:  # a store hiccup must not stop the training
                    log.debug("heartbeat of %s failed: %s", r.run_id, e)

    def stop(self, reason: str) -> list[tuple[object, dict]]:
        """Ends every job in flight within ~2 s and returns (key, outcome) for each. A job whose run already
        ended (FINISHED or FAILED in the store: it was tearing down, or its result was still in the pipe) keeps
        that status and outcome; only a run still RUNNING in the store is marked KILLED with ``reason``. The
        processes are gone first, so none can change its run's status after it is read."""
        for r in self.running:
            if self._executor is not None:
                r.handle.cancel(check=False)
            else:
                _signal_group(r.handle.pid, signal.SIGTERM)
        deadline = time.time() + STOP_GRACE
        for r in self.running:
            if self._executor is None:
                r.handle.join(max(0.0, deadline - time.time()))
                _signal_group(r.handle.pid, signal.SIGKILL)  # stragglers, and whatever the job started
                r.handle.join(1)
        out = []
        for r in self.running:
            sent = self._sent(r)
            out.append((r.key, self._settle(r, reason, sent)))
        self.running = []
        return out

    def _sent(self, r: _Running) -> dict | None:
        """The outcome a local job had written to its pipe before it was stopped, if any."""
        if r.conn is None:
            return None
        try:
            return r.conn.recv() if r.conn.poll() else None
        except (EOFError, OSError):
            return None

    def _settle(self, r: _Running, reason: str, sent: dict | None) -> dict:
        """Under the store lock: the run's own status if it ended, else KILLED (set now)."""
        killed = {"status": "KILLED", "error": reason}
        if self.client is None:
            return sent or killed
        with self.lock if self.lock is not None else contextlib.nullcontext():
            try:
                run = self.client.get_run(r.run_id)
                if run.info.status in ("FINISHED", "FAILED"):
                    if sent is not None:
                        return sent
                    metrics = {k.removeprefix("val/"): v for k, v in run.data.metrics.items() if k.startswith("val/")}
                    error = run.data.tags.get("error", "failed")
                    return {"status": run.info.status, "metrics": metrics, "error": error}
                self.client.set_tag(r.run_id, "error", reason)
                self.client.set_terminated(r.run_id, "KILLED")
            except Exception as e:  # the store is down: the run stays RUNNING and fail_abandoned settles it
                log.error("could not settle run %s after the stop: %s", r.run_id, e)
        return killed


STOP_GRACE = 2.0  # seconds a stopped job has to exit on SIGTERM before SIGKILL


def _signal_group(pid: int | None, sig: int) -> None:
    """Sends ``sig`` to the process group a worker leads (see ``_worker``); nothing if it is gone."""
    if pid is None:
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
