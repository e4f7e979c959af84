"""Compose -> train -> evaluate -> log. ``run.py`` is a thin Hydra wrapper around ``train``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from .checkpoints import fetch_run_checkpoint, find_checkpoint, write_run_card
from .config import flatten
from .errors import BagofError
from .features import check_features
from .models.layers.global_bn import convert_global_bn
from .provenance import run_tags
from .tasks import ClassificationTask, DetectionTask, TrainingTask
from .utils.allocator import keep_freed_memory
from .utils.console import EpochSummary, quiet_known_noise

log = logging.getLogger(__name__)


def run_label(cfg: DictConfig) -> str:
    """What ran, as an MLflow run name: data, network, toggles, seed (e.g. ``bccd cspdarknet53-pan +mosaic s0``)."""
    m = cfg.model
    net = "-".join(str(x) for x in (m.get("backbone"), m.get("neck")) if x)
    toggles = "+".join(cfg.get("features") or {})
    return " ".join(x for x in (cfg.data.name, net, f"+{toggles}" if toggles else "", f"s{cfg.seed}") if x)


def build_logger(cfg: DictConfig, run_id: str | None = None):
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return None
    uri = cfg.logger.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    extra = {"run_name": cfg.get("run_name") or run_label(cfg)}
    if run_id:
        extra["run_id"] = run_id
    return hydra.utils.instantiate(cfg.logger, **extra)


def build_task(cfg: DictConfig, model, loss) -> TrainingTask:
    """``task=detect`` (the default) or ``task=classify`` (conf/task/); the rest of the loop is shared."""
    t, kind = cfg.train, cfg.get("task", "detect")
    if kind == "detect":
        return DetectionTask(model, loss, t.optimizer, t.scheduler, t.postprocess, eval_every=t.eval_every)
    if kind == "classify":
        return ClassificationTask(model, loss, t.optimizer, t.scheduler)
    raise BagofError(f"task={kind!r}: choose detect or classify (conf/task/)")


@dataclass
class RunResult:
    metrics: dict[str, float]  # detection: AP, AP50, AP75, APs, APm, APl; classification: top1, top5; in [0, 1]
    run_id: str | None  # MLflow run id (None without a logger)
    seconds: float


def train(cfg: DictConfig) -> float:
    """Trains and evaluates one configuration; returns its primary metric (AP, or top-1 for a classifier)."""
    metrics = fit(cfg).metrics
    return metrics.get("AP", metrics.get("top1", 0.0))


def fit(cfg: DictConfig) -> RunResult:
    """Trains and evaluates one configuration, logs it, and returns its metrics and MLflow run id."""
    quiet_known_noise()
    keep_freed_memory()  # no page faults for what each step frees and allocates again (utils/allocator.py)
    resolve_config(cfg)
    check_features(cfg)
    resume = find_checkpoint(cfg.train.resume, cfg) if cfg.train.get("resume") else None
    t0 = time.time()
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    model = hydra.utils.instantiate(cfg.model, _convert_="all", **local_weights(cfg))
    loss = hydra.utils.instantiate(cfg.loss)
    t = cfg.train
    if t.get("channels_last"):  # the convolutions then hand NHWC on (inputs follow their weights' layout)
        model = model.to(memory_format=torch.channels_last)
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    sync_bn = bool(t.get("sync_batchnorm"))
    if sync_bn and not on_gpu:  # torch's SyncBatchNorm (Lightning's flag, below) runs on CUDA only
        convert_global_bn(model)
    task = build_task(cfg, model, loss)
    logger = build_logger(cfg, resume.run_id if resume else None)
    if logger is not None and resume is not None and resume.run_id:
        logger.experiment.update_run(resume.run_id, status="RUNNING")  # the same run goes on
    elif logger is not None:
        logger.log_hyperparams(flatten(cfg))
        logger.experiment.set_tag(logger.run_id, "data_issues", dict(datamodule.issues) or "none")
        for k, v in run_tags(cfg).items():
            logger.experiment.set_tag(logger.run_id, k, v)
        if getattr(datamodule, "class_names", None):  # what the model's class indices are
            logger.experiment.set_tag(logger.run_id, "bagof.classes", json.dumps(datamodule.class_names)[:5000])
    # training-time features that hook into the loop (CmBN, SAT, DropBlock's schedule) come from toggles
    features = [hydra.utils.instantiate(c) for c in (t.get("callbacks") or {}).values()]
    run_id = logger.run_id if logger is not None else None
    ckpt_dir = (
        Path(cfg.paths.root)
        / "outputs"
        / "checkpoints"
        / (run_id or time.strftime("%Y%m%d-%H%M%S-") + str(os.getpid()))
    )
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_run_card(ckpt_dir, cfg, run_id, logger)
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,
        benchmark=t.get("cudnn_benchmark"),
        strategy=t.get("strategy") or "auto",
        sync_batchnorm=sync_bn and on_gpu,
        accumulate_grad_batches=t.accumulate,
        logger=logger if logger is not None else False,
        callbacks=[
            ModelCheckpoint(ckpt_dir, "last", save_top_k=1, enable_version_counter=False),
            EpochSummary(),
            *features,
        ]
        + ([LearningRateMonitor("step")] if logger else []),
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        deterministic=False,
    )
    if resume is not None:
        log.info("resuming %s from %s", run_id or "the run", resume.ckpt)
    try:
        with warnings.catch_warnings():  # Lightning's advice that does not apply to the loaders we build
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
            trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume.ckpt) if resume else None)
        metrics = task.last_metrics
        if logger is not None:
            _log_artifacts(logger, cfg, task, datamodule)
            logger.experiment.log_metric(logger.run_id, "train/minutes", (time.time() - t0) / 60)
            logger.experiment.set_terminated(logger.run_id, "FINISHED")  # only now: the cache may reuse it
    except BaseException as e:
        if logger is not None and logger._initialized:
            try:  # the reason on the run (a full disk while logging artifacts, a crash): never FINISHED without them
                first = str(e).splitlines()[0] if str(e) else ""
                logger.experiment.set_tag(logger.run_id, "error", f"{type(e).__name__}: {first}"[:500])
                logger.experiment.set_terminated(logger.run_id, "FAILED")
            except Exception:
                pass
        log.error("checkpoints kept in %s: continue with train.resume=%s", ckpt_dir, ckpt_dir / "last.ckpt")
        raise
    if logger is not None:  # the checkpoint is a run artifact now; a run without MLflow keeps its only copy
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    _print_summary(cfg, metrics, logger, time.time() - t0)
    return RunResult(metrics, logger.run_id if logger is not None else None, time.time() - t0)


def local_weights(cfg: DictConfig) -> dict:
    """``model.weights`` / ``model.backbone_weights=runs:/<id>``: the run's checkpoint fetched to a local file
    now, so models never talk to MLflow (the config keeps the runs:/ form, which is what the run logs and
    hashes). Returns the keyword arguments that replace them when the model is instantiated."""
    from .models.transfer import run_id_of

    out = {}
    for key in ("weights", "backbone_weights"):
        src = cfg.model.get(key)
        if src and run_id_of(str(src)) is not None:
            uri = cfg.logger.tracking_uri if cfg.get("logger") and "tracking_uri" in cfg.logger else None
            out[key] = str(fetch_run_checkpoint(str(src), uri, key=f"model.{key}"))
    return out


def resolve_config(cfg: DictConfig) -> None:
    """Resolves every interpolation now, so a config problem surfaces as its own clear error."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as e:
        cause = e
        while cause is not None and not isinstance(cause, BagofError):  # OmegaConf wraps the resolver's error
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def _log_artifacts(logger, cfg: DictConfig, task, datamodule) -> None:
    client, run_id = logger.experiment, logger.run_id
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(Path(d) / "config.yaml"))
        for f in task.write_artifacts(Path(d), datamodule):
            client.log_artifact(run_id, str(f))


def _print_summary(cfg, metrics, logger, seconds) -> None:
    lines = [f"bagof: {cfg.model.backbone} on {cfg.data.name} at scale={cfg.scale.name}, {seconds / 60:.1f} min"]
    lines.append("  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    if logger is not None:
        lines.append(
            f"  MLflow run {logger.run_id} (experiment {cfg.experiment!r}, {cfg.logger.tracking_uri}); "
            "browse with `make ui`"
        )
    print("\n".join(lines), flush=True)
