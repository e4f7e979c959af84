"""bagof: YOLOv4's Bag of Freebies and Bag of Specials as toggles, and the paper's ablation tables as sweeps.

usage: bagof <command> [arguments]    (bagof <command> --help: what it takes)

Each command is the module named beside it, run as it is (the make targets and run.py call the same ones).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

from ..config import CONFIG_DIR

SWEEPS_DIR = Path(CONFIG_DIR).parent / "sweeps"

# name -> (one line of help, the module whose docstring is its --help)
COMMANDS = {
    "train": ("train and evaluate one config: Hydra overrides, -m for a multirun (run.py)", "bagof.cli.train"),
    "eval": ("COCO evaluation of saved weights, no training", "bagof.cli.eval"),
    "predict": ("detections on an image, a folder or a video: SOURCE then overrides", "bagof.cli.predict"),
    "export": ("saved weights as ONNX (--format onnx) or Darknet .weights (--format darknet)", "bagof.cli.export"),
    "table": (
        "train a table's rows (reusing finished runs) and write its report: N or a sweep file",
        "bagof.experiments",
    ),
    "report": ("rebuild a table's report from the MLflow store, no training: N or a sweep file", "bagof.experiments"),
    "archive": (
        "record a table's finished runs in reports/runs/ without a report (one still training): N or a sweep file",
        "bagof.experiments",
    ),
    "search": (
        "the GA hyperparameter search (Optuna): Hydra overrides, e.g. data=bccd",
        "bagof.experiments.search.driver",
    ),
    "ui": ("the MLflow UI over the store (sqlite:///mlflow.db): --port, --host", "mlflow"),
    "bench": ("benchmarks: training images/s, latency against OpenCV DNN, evaluation", "bagof.cli.bench"),
    "summary": ("the composed model's layers, parameters and BFLOPs: Hydra overrides", "bagof.cli.summary"),
    "anchors": ("k-means optimized anchors of a dataset's training boxes: Hydra overrides", "bagof.cli.anchors"),
}
SWEEP_COMMANDS = {"table": "run", "report": "report", "archive": "archive"}  # bagof X -> python -m bagof.experiments Y


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (text, _) in COMMANDS.items())
    return f"{__doc__.strip()}\n\ncommands:\n{rows}\n"


def sweep_path(what: str) -> str:
    """``4``, ``table4`` or a path -> the sweep file."""
    if what.isdigit():
        what = f"table{what}"
    if not what.endswith((".yaml", ".yml")) and (SWEEPS_DIR / f"{what}.yaml").is_file():
        return str(SWEEPS_DIR / f"{what}.yaml")
    return what


def _help(name: str) -> None:
    text, module = COMMANDS[name]
    print(f"bagof {name}: {text}\n")
    if name == "ui":
        print("Starts `mlflow ui --backend-store-uri <store>` (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")
        return
    if name in SWEEP_COMMANDS:
        print(f"usage: bagof {name} N|SWEEP [options]  (N: sweeps/tableN.yaml)\n")
        from ..experiments.__main__ import main as sweeps

        sweeps([SWEEP_COMMANDS[name], "--help"])
        return
    doc = importlib.import_module(module).__doc__ or ""
    print(doc.strip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        print(f"bagof: no command {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in args):
        try:
            _help(name)
        except SystemExit as e:  # argparse's own --help ends with exit 0
            return int(e.code or 0)
        return 0
    if name == "train":
        from .train import run

        return run(args, prog="bagof train")
    if name == "search":
        from .train import run

        return run(["-m", "hydra/sweeper=bagof_ga", "+search=ga", *args], prog="bagof search")
    if name in SWEEP_COMMANDS:
        from ..experiments.__main__ import main as sweeps

        if not args:
            print(f"usage: bagof {name} N|SWEEP [options]", file=sys.stderr)
            return 2
        return sweeps([SWEEP_COMMANDS[name], sweep_path(args[0]), *args[1:]])
    if name == "ui":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
        os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", uri, *args])
    module = importlib.import_module(COMMANDS[name][1])
    module.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
