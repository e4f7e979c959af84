"""Hydra/OmegaConf helpers shared by run.py, the summary tool and the tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)


def optimized_anchors(data_name: str, key: str):
    """``${anchors:<data name>,<key>}``: a value from conf/anchors/<data name>.yaml (made by `make anchors`)."""
    path = Path(CONFIG_DIR) / "anchors" / f"{data_name}.yaml"
    if not path.is_file():
        from .errors import BagofError

        raise BagofError(
            f"no optimized anchors for data={data_name} ({path} missing): run `make anchors DATA={data_name}` first"
        )
    return OmegaConf.load(path)[key]


if not OmegaConf.has_resolver("anchors"):
    OmegaConf.register_new_resolver("anchors", optimized_anchors)


def fast_precision() -> str:
    """``${fast_precision:}``: ``bf16-mixed`` where this machine computes bfloat16 natively (a CPU with
    AVX512-BF16/AMX or an ARM bf16 unit as oneDNN reports it, or a CUDA GPU with bf16), else ``32-true``: emulated
    bf16 is slower than float32. The value is resolved into the config and its hash (a run's numerics)."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16-mixed" if native else "32-true"


def loader_workers(most: int | str = 8) -> int:
    """``${workers:8}``: DataLoader workers scaled to the machine, at most ``most`` and one core left to the main
    process (0 on a 1- or 2-core machine, where decoding once into the RAM cache beats worker processes)."""
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use (a cluster job's share), not the node's
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(int(most), cores - 1)) if cores > 2 else 0


def cuda_available() -> bool:
    """``${cuda:}``: whether a CUDA GPU is here (a setting that pays on a GPU and costs on the CPU)."""
    import torch

    return torch.cuda.is_available()


def nhwc_pays(precision: str) -> bool:
    """``${nhwc:<precision>}``: whether NHWC activations (``train.channels_last``) speed training up here: on a
    CUDA GPU (tensor cores), and on a CPU under bfloat16 autocast, where oneDNN's convolutions take 2.2x less time
    in NHWC over a cpu-scale YOLOv4 step (the thin layers' BatchNorm stays NCHW, models/layers/conv.py); not in
    float32 on a CPU (0.97x measured)."""
    return cuda_available() or str(precision) == "bf16-mixed"


def artifact_location(tracking_uri: str, local: str) -> str | None:
    """``${artifact_location:<tracking uri>,<folder>}``: where a new experiment keeps its artifacts. A SQLite store
    keeps them in ``mlartifacts/`` beside its database file (a store moved or kept elsewhere takes its artifacts
    along; the default store's is the repo's ``mlartifacts/``), another local store in ``local``; a tracking server
    decides itself (its proxied ``mlflow-artifacts:/`` destination), so that every worker's checkpoints land where
    the others can read them."""
    uri = str(tracking_uri)
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return local if uri.startswith(("sqlite:", "file:", "/", ".")) else None


_RESOLVERS = (
    ("fast_precision", fast_precision),
    ("workers", loader_workers),
    ("cuda", cuda_available),
    ("nhwc", nhwc_pays),
    ("artifact_location", artifact_location),
)
for _name, _fn in _RESOLVERS:
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)

_ga_warned: set[tuple[str, str]] = set()


def voc_num_classes(root: str, classes) -> int:
    """``${voc_num_classes:<root>,<classes>}``: the class count of a VOC folder: the class list's length, else the
    number of names in its XML files (with a warning that lists them; the data module reads the same names)."""
    if classes:
        return len(classes)
    from .data.formats import voc_class_names

    names = voc_class_names(root)
    logging.getLogger("bagof").warning(
        "data.classes is not set: using the %d names found in %s's XML files, sorted: %s. Set "
        "'data.classes=[%s]' to fix them (and their order)",
        len(names),
        root,
        names,
        ",".join(names),
    )
    return len(names)


for _name, _fn in (
    ("voc_num_classes", voc_num_classes),
    ("folder_name", lambda p: Path(str(p)).name),
    ("len", lambda xs: len(xs)),
):
    if not OmegaConf.has_resolver(_name):  # cached: a config scans its VOC folder once, however often it is read
        OmegaConf.register_new_resolver(_name, _fn, use_cache=True)


def ga_file(*, _root_) -> str:
    """``${ga_file:}``: which conf/hparams/ga-<name>.yaml the GA toggle reads (conf/bof/ga.yaml: the rule)."""
    from .errors import BagofError

    want, fallback = str(_root_.ga.hparams), str(_root_.ga.fallback)
    own = f"{_root_.data.name}-{_root_.scale.name}"
    folder = Path(CONFIG_DIR) / "hparams"
    if (folder / f"ga-{want}.yaml").is_file():
        return want
    avail = sorted(p.stem.removeprefix("ga-") for p in folder.glob("ga-*.yaml"))
    if want != own or not (folder / f"ga-{fallback}.yaml").is_file():
        raise BagofError(
            f"+bof=ga: no GA hyperparameters {folder}/ga-{want}.yaml: run `make ga DATA=<data> "
            f"SCALE=<scale>` for them, or pick one of {avail} with ga.hparams=<name>"
        )
    if (want, fallback) not in _ga_warned:
        _ga_warned.add((want, fallback))
        import logging

        logging.getLogger("bagof").warning(
            "+bof=ga: no GA search for data=%s scale=%s (conf/hparams/ga-%s.yaml); using ga-%s.yaml instead "
            "(`make ga DATA=%s SCALE=%s` makes your own)",
            _root_.data.name,
            _root_.scale.name,
            want,
            fallback,
            _root_.data.name,
            _root_.scale.name,
        )
    return fallback


def ga_value(key: str, *, _root_):
    """``${ga:<dotted key>}``: the tuned value of ``key`` in the GA hyperparameter file picked by ``ga_file``."""
    from .errors import BagofError

    name = ga_file(_root_=_root_)
    path = Path(CONFIG_DIR) / "hparams" / f"ga-{name}.yaml"
    value = OmegaConf.select(OmegaConf.load(path), key)
    if value is None:
        raise BagofError(
            f"{path} has no value for {key}: the search space gained a key since it was written; "
            f"rerun its search (`make ga`)"
        )
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


for _name, _fn in (("ga_file", ga_file), ("ga", ga_value)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'a.b.c': value} for MLflow params (values as short strings)."""
    out = {}
    items = cfg.items() if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True).items()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def compose_config(overrides=()) -> DictConfig:
    """The composed config for ``overrides``; works standalone and inside a running Hydra app (a sweeper)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside @hydra.main: its config search path is ours
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))
