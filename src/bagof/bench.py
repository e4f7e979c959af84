"""`make bench`: figures, not assertions. Prints and writes ``reports/bench/bench.json``.

- training images/s and peak memory at ``cpu`` scale (real data pipeline: the embedded dataset);
- inference latency of the paper-scale YOLOv4 at 416x416, batch 1 (median of repeated runs);
- evaluation time of the validation split at ``cpu`` scale (decode + NMS + pycocotools).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

from .config import CONFIG_DIR
from .eval import coco_evaluate, to_coco_results
from .ops.postprocess import postprocess


def _cfg(overrides):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_train(overrides, steps: int = 20) -> dict:
    cfg = _cfg(["scale=cpu", *overrides])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    model = hydra.utils.instantiate(cfg.model, _convert_="all").train()
    loss_fn = hydra.utils.instantiate(cfg.loss)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    it = iter(dm.train_dataloader())
    n, t0 = 0, None
    rss0 = _peak_rss_mb()
    for step in range(steps + 2):
        try:
            imgs, targets, _ = next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            imgs, targets, _ = next(it)
        if step == 2:  # two warm-up steps
            t0, n = time.perf_counter(), 0
        out = model(imgs)
        loss, _ = loss_fn(out, targets, model.anchors, model.strides, model.scale_x_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(imgs)
    secs = time.perf_counter() - t0
    return (
        {
            "config": f"scale=cpu {' '.join(overrides)}".strip(),
            "img_size": cfg.data.img_size,
            "batch_size": cfg.data.batch_size,
            "steps": steps,
            "images_per_s": n / secs,
            "peak_rss_mb": _peak_rss_mb(),
            "rss_before_mb": rss0,
        },
        dm,
        model,
    )


def bench_latency(size: int = 416, repeats: int = 10) -> dict:
    cfg = _cfg(["scale=paper", "data=coco", f"data.img_size={size}"])
    model = hydra.utils.instantiate(cfg.model, _convert_="all").eval()
    x = torch.zeros(1, 3, size, size)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            postprocess(model.decode(model(x)))
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return {
        "model": "yolov4 (paper scale, 80 classes)",
        "input": f"{size}x{size}",
        "batch": 1,
        "latency_ms_median": 1000 * statistics.median(times),
        "latency_ms_min": 1000 * min(times),
        "repeats": repeats,
    }


def bench_eval(dm, model) -> dict:
    model.eval()
    cats = dm.categories
    t0 = time.perf_counter()
    results = []
    with torch.no_grad():
        for imgs, _, metas in dm.val_dataloader():
            for d, meta in zip(postprocess(model.decode(model(imgs))), metas):
                d[:, :4] = meta["letterbox"].inverse_boxes(d[:, :4], meta["width"], meta["height"])
                results += to_coco_results(d, meta["image_id"], cats)
    t_pred = time.perf_counter() - t0
    t1 = time.perf_counter()
    coco_evaluate(dm.val_set.coco, results)
    return {
        "images": len(dm.val_set),
        "detections": len(results),
        "predict_nms_s": t_pred,
        "pycocotools_s": time.perf_counter() - t1,
    }


def main(argv: list[str]) -> None:
    threads = int(os.environ.get("BAGOF_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train, dm, model = bench_train(argv)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": threads,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "torch": torch.__version__,
        "train_cpu_scale": train,
        "eval_cpu_scale": bench_eval(dm, model),
        "latency_paper_yolov4": bench_latency(),
    }
    print(json.dumps(report, indent=2))
    out = Path(os.environ.get("BAGOF_ROOT", ".")) / "reports" / "bench" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
