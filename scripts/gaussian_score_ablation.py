"""Is a Gaussian YOLO row's AP loss in the ranking or in the boxes? Re-scores a table row's finished runs from
their checkpoints twice, with and without the (1 - mean sigma) factor on the score (the model's ``gaussian``
decode flag off), and prints both beside the AP the run logged (the first must reproduce it).

    PYTHONPATH=src .venv/bin/python scripts/gaussian_score_ablation.py table5 CSPResNeXt50-PANet-SPP-SAM-G

Uses the store in MLFLOW_TRACKING_URI (default sqlite:///mlflow.db) and the datasets under BAGOF_DATASETS;
each run's own logged config (data, scale, precision, postprocessing) is used as it was.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import hydra
import mlflow
import torch
from omegaconf import OmegaConf

from bagof.cli.eval import load_model, predict
from bagof.eval import coco_evaluate, to_coco_results


def score(model, cfg) -> dict[str, float]:
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("validate")
    post = OmegaConf.to_container(cfg.train.postprocess)
    results, seen = [], []
    for imgs, _, metas in dm.val_dataloader():
        for det, meta in zip(predict(model, imgs, metas, post, str(cfg.train.precision)), metas):
            seen.append(meta["image_id"])
            results += to_coco_results(det, meta["image_id"], dm.categories)
    metrics, _ = coco_evaluate(dm.val_set.coco, results, seen)
    scores = [r["score"] for r in results]
    # what the factor does to the ranking's input, beside what it does to AP: the detections over the threshold
    return {k: round(metrics[k], 4) for k in ("AP", "AP50", "AP75")} | {
        "detections": len(scores),
        "mean_score": round(sum(scores) / len(scores), 6) if scores else None,
    }


def main(experiment: str, row: str) -> None:
    torch.set_num_threads(1)
    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"error: no experiment {experiment!r} in the store")
    runs = client.search_runs([exp.experiment_id], f"tags.row = '{row}' and attributes.status = 'FINISHED'")
    if not runs:
        sys.exit(f"error: no finished run of row {row!r} in experiment {experiment!r}")
    for run in sorted(runs, key=lambda r: r.info.start_time):
        with tempfile.TemporaryDirectory() as d:
            cfg = OmegaConf.load(client.download_artifacts(run.info.run_id, "config.yaml", d))
        if not cfg.model.get("gaussian"):
            continue
        cfg.model.weights = f"runs:/{run.info.run_id}"
        model = load_model(cfg)
        line = {
            "run": run.info.run_id,
            "seed": run.data.tags.get("seed"),
            "loss": "reference (sigma_const)" if "sigma_const" in cfg.loss else "textbook NLL (code 0.4.0)",
            "logged": {k: round(run.data.metrics.get(f"val/{k}", float("nan")), 4) for k in ("AP", "AP50", "AP75")},
        }
        for factor in (True, False):
            model.gaussian = factor  # only decode() reads it: the score factor on or off, the network unchanged
            line["with factor" if factor else "without"] = score(model, cfg)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
