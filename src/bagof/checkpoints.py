"""Where a run's checkpoints live and how an interrupted run is continued (``train.resume``).

Every run saves ``last.ckpt`` each epoch under ``outputs/checkpoints/<MLflow run id>/`` (a timestamp without
MLflow) beside ``run.yaml``, a card with the run id and the run's identity (the config less what does not
change results, as the result cache hashes it). With MLflow the checkpoint is also a run artifact, so a
run can be resumed on another machine; the local folder is removed when the run finishes.

``train.resume`` takes a ``last.ckpt`` path, ``runs:/<run id>`` (the local folder, else the run's artifacts),
or ``last``: the newest checkpoint under ``outputs/checkpoints/`` of this same config. The resumed run
continues the same MLflow run (epoch, optimizer, LR schedule and callbacks' states come from the
checkpoint); a checkpoint of another config is refused with the keys that differ.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig

from .errors import BagofError
from .identity import CODE_VERSION, config_hash, identity

CARD = "run.yaml"
ARTIFACT = "last"  # where Lightning's MLflow logger puts last.ckpt (the file's stem)


@dataclass
class Resume:
    ckpt: Path
    run_id: str | None


def checkpoint_root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.root) / "outputs" / "checkpoints"


def write_run_card(folder: Path, cfg: DictConfig, run_id: str | None, logger=None) -> Path:
    card = folder / CARD
    card.write_text(
        yaml.safe_dump(
            {
                "run_id": run_id,
                "config_hash": config_hash(cfg),
                "code_version": CODE_VERSION,
                "identity": identity(cfg),
            },
            sort_keys=False,
        )
    )
    if logger is not None:
        logger.experiment.log_artifact(run_id, str(card), ARTIFACT)
    return card


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _intact(ckpt: Path) -> None:
    """A torch checkpoint is a zip archive: one cut short (a full disk, a killed copy) has no central directory or a
    member whose CRC fails. Checked here so the error names the file, not a torch reader's internals."""
    import zipfile

    try:
        with zipfile.ZipFile(ckpt) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise BagofError(
            f"train.resume: {ckpt} is truncated or not a checkpoint ({type(e).__name__}: {e}); resume from the run's "
            "logged copy (train.resume=runs:/<run id>) or start the run again"
        ) from None
    if bad is not None:
        raise BagofError(f"train.resume: {ckpt} is damaged ({bad} fails its CRC); resume from the run's logged copy")


def _check(card_path: Path, cfg: DictConfig, ckpt: Path) -> dict:
    if not card_path.is_file():
        raise BagofError(f"train.resume: {ckpt} has no {CARD} beside it (not a bagof run's checkpoint folder)")
    _intact(ckpt)
    card = yaml.safe_load(card_path.read_text())
    if card.get("config_hash") != config_hash(cfg):
        mine, theirs = _flat(identity(cfg)), _flat(card.get("identity"))
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        text = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in diff[:6])
        raise BagofError(
            f"train.resume: {ckpt} was trained with another config ({text}"
            f"{', ...' if len(diff) > 6 else ''}); repeat the interrupted run's overrides"
        )
    return card


def find_checkpoint(spec, cfg: DictConfig) -> Resume:
    spec = str(spec)
    root = checkpoint_root(cfg)
    if spec == "last":
        want = config_hash(cfg)
        cards = [c for c in root.glob(f"*/{CARD}") if (c.parent / "last.ckpt").is_file()]
        mine = [c for c in cards if yaml.safe_load(c.read_text()).get("config_hash") == want]
        if not mine:
            raise BagofError(
                f"train.resume=last: no checkpoint of this config under {root} ({len(cards)} of other "
                "configs); repeat the interrupted run's overrides, or give a last.ckpt path"
            )
        card = max(mine, key=lambda c: (c.parent / "last.ckpt").stat().st_mtime)
        _intact(card.parent / "last.ckpt")
        return Resume(card.parent / "last.ckpt", yaml.safe_load(card.read_text()).get("run_id"))
    if spec.startswith("runs:/"):
        run_id = spec.removeprefix("runs:/").strip("/").split("/")[0]
        folder = root / run_id
        if not (folder / "last.ckpt").is_file():
            folder = _download(run_id, cfg)
        _check(folder / CARD, cfg, folder / "last.ckpt")
        return Resume(folder / "last.ckpt", run_id)
    ckpt = Path(spec)
    if ckpt.is_dir():
        ckpt = ckpt / "last.ckpt"
    if not ckpt.is_file():
        raise BagofError(f"train.resume={spec}: no such checkpoint (give a last.ckpt path, runs:/<run id> or last)")
    card = _check(ckpt.parent / CARD, cfg, ckpt)
    return Resume(ckpt, card.get("run_id"))


def _download(run_id: str, cfg: DictConfig) -> Path:
    import mlflow

    if not cfg.get("logger") or "tracking_uri" not in cfg.logger:
        raise BagofError(f"train.resume=runs:/{run_id}: no local checkpoint and logging is off (logger=none)")
    dst = Path(tempfile.mkdtemp(prefix=f"bagof-resume-{run_id[:8]}-"))
    try:
        got = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=ARTIFACT, dst_path=str(dst), tracking_uri=cfg.logger.tracking_uri
        )
    except Exception as e:
        raise BagofError(
            f"train.resume=runs:/{run_id}: no checkpoint among the run's artifacts in "
            f"{cfg.logger.tracking_uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    folder = Path(got)
    if not (folder / "last.ckpt").is_file():
        raise BagofError(f"train.resume=runs:/{run_id}: the run has no last.ckpt artifact")
    return folder


def fetch_run_checkpoint(source: str, tracking_uri: str | None, key: str = "model.backbone_weights") -> Path:
    """``model.weights`` / ``model.backbone_weights=runs:/<id>`` (or a bare run id) -> the run's logged ``.ckpt``,
    downloaded; ``key`` is the option the errors name."""
    import mlflow

    from .models.transfer import TransferError, run_id_of

    run_id = run_id_of(source)
    if tracking_uri is None:
        raise TransferError(
            f"{key}={source!r}: an MLflow run, but logging is off (logger=none): drop logger=none to read the run "
            "from the store, or give the checkpoint's path"
        )
    client = mlflow.MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as e:
        raise TransferError(
            f"{key}={source!r}: run {run_id} is not in the MLflow store {tracking_uri} ({type(e).__name__})"
        ) from None

    def find(path=None):
        for f in client.list_artifacts(run_id, path):
            if f.is_dir:
                hit = find(f.path)
                if hit:
                    return hit
            elif f.path.endswith(".ckpt"):
                return f.path
        return None

    art = find()
    if art is None:
        raise TransferError(
            f"{key}={source!r}: run {run_id} logged no checkpoint (.ckpt); "
            "train it with MLflow logging on (logger.log_model, the default)"
        )
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=art, tracking_uri=tracking_uri))
