"""`scripts/gpu_check.sh` (or `python -m bagof.cli.gpu_check`): what one GPU says about the paper scale (issue 15).

Every part is written to the JSON as soon as it ends; a part that fails is recorded with its error and the others
go on, so a GPU session that runs out of time still brings back what it measured.

- ``throughput``: paper-scale YOLOv4 (full width and depth, 80 classes) at 512 px, the training step the Lightning
  loop runs (the task's ``compute_loss``, backward, SGD step) on COCO128 images: images/s and peak GPU memory for
  float32 and bf16-mixed, mini-batch 8 and 32, NCHW and channels_last.
- ``parity``: one forward/backward of the same weights on the CPU and on the GPU, both float32 (TF32 off): the
  loss, the raw head outputs and every parameter's gradient compared.
- ``train``: one short run end to end through ``bagof.train.fit`` at ``scale=paper`` on COCO128 (Lightning, the
  scale's own precision and loader settings, no extra flags, COCO evaluation by pycocotools), two-step runs
  of CmBN and SAT under bf16-mixed and 16-mixed, and four-step runs of Gaussian YOLO's head and loss under both.

``--dry-run`` runs every part on the CPU at smoke size in seconds (the test suite does, so the script cannot rot
between the rare sessions that have a GPU); it writes to ``outputs/gpu_check/`` and never to reports/.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import hydra
import torch

from ..config import compose_config
from ..models.layers import activations
from ..train import build_task, fit
from ..utils.precision import autocast_for

COMMITTED = Path("reports/bench/gpu.json")  # a real GPU run's figures; a dry run writes under outputs/


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _machine(device: torch.device) -> dict:
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["multiprocessors"] = p.multi_processor_count
    return info


def _batches(overrides: list[str], batch: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` training mini-batches of ``batch`` COCO128 images (the scale's augmentation, no mixes)."""
    cfg = compose_config([*overrides, f"data.batch_size={batch}", "data.num_workers=0"])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    out = []
    while len(out) < n:
        out += [b[:2] for _, b in zip(range(n - len(out)), dm.train_dataloader())]
    return out


def _split(batches, size: int):
    """Mini-batches of ``size`` cut from larger ones (targets' image index renumbered)."""
    for imgs, t in batches:
        for i in range(0, len(imgs), size):
            keep = (t[:, 0] >= i) & (t[:, 0] < i + size)
            part = t[keep].clone()
            part[:, 0] -= i
            yield imgs[i : i + size], part


def throughput(overrides, device, sizes, formats, precisions, steps: int, warmup: int, n_batches: int) -> list[dict]:
    cfg = compose_config(overrides)
    torch.backends.cudnn.benchmark = bool(cfg.train.cudnn_benchmark)  # as the Lightning run sets it
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, _convert_="all").to(device).train()
    task = build_task(cfg, model, hydra.utils.instantiate(cfg.loss))
    big = _batches(overrides, max(sizes), n_batches)
    rows = []
    for fmt in formats:
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        model.to(memory_format=mf)
        for precision in precisions:
            for size in sizes:
                batches = [(i.to(device).contiguous(memory_format=mf), t.to(device)) for i, t in _split(big, size)]
                batches = [b for b in batches if len(b[0]) == size]
                opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                row = {"precision": precision, "batch": size, "memory_format": fmt}
                try:
                    for k in range(warmup + steps):
                        if k == warmup:
                            _sync(device)
                            t0 = time.perf_counter()
                        imgs, targets = batches[k % len(batches)]
                        with autocast_for(precision, device.type):
                            loss, _ = task.compute_loss(imgs, targets)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    _sync(device)
                    dt = time.perf_counter() - t0
                    row.update(images_per_s=round(size * steps / dt, 1), step_ms=round(1000 * dt / steps, 1))
                    row["loss_finite"] = bool(torch.isfinite(loss).item())
                    if device.type == "cuda":
                        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
                except torch.OutOfMemoryError as e:
                    row["error"] = f"out of memory: {str(e).splitlines()[0]}"
                del opt
                rows.append(row)
                print(json.dumps(row), flush=True)
    model.to(memory_format=torch.contiguous_format)
    return rows


def _step_grads(model, loss_fn, imgs, targets, device) -> tuple[float, list[torch.Tensor], dict]:
    """Loss, raw head outputs and parameter gradients of one float32 forward/backward on ``device``."""
    model.zero_grad(set_to_none=True)
    raw = model(imgs.to(device))
    loss = loss_fn(raw, targets.to(device), model.anchors, model.strides, model.scale_x_y)[0]
    loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), [r.detach().float().cpu() for r in raw], grads


def _compare(a, b) -> dict:
    (la, ra, ga), (lb, rb, gb) = a, b
    rel = {n: ((gb[n] - g).norm() / g.norm().clamp_min(1e-12)).item() for n, g in ga.items()}
    fa, fb = (torch.cat([g[n].flatten() for n in ga]).double() for g in (ga, gb))
    return {
        "loss": [la, lb],
        "loss_rel_diff": abs(la - lb) / max(abs(la), 1e-12),
        "head_max_abs_diff": max((x - y).abs().max().item() for x, y in zip(ra, rb)),
        "head_max_abs": max(x.abs().max().item() for x in ra),
        "grad_rel_l2_all": ((fb - fa).norm() / fa.norm()).item(),
        "grad_rel_l2_median_param": sorted(rel.values())[len(rel) // 2],
        "grad_rel_l2_worst": [max(rel, key=rel.get), max(rel.values())],
        "grad_cosine": torch.nn.functional.cosine_similarity(fa, fb, dim=0).item(),
    }


def parity(overrides, device, batch: int) -> dict:
    """The same weights and images, one float32 forward/backward on the CPU and on ``device`` (TF32 off), in eval
    mode (BatchNorm's running statistics: every layer's arithmetic, to a tight tolerance) and in train mode.

    Train mode is compared with its own noise floor: the CPU again on the images moved by 1e-6 (far below a
    pixel's 1/255). With random weights, BatchNorm's statistics over a few images make the gradient of the early
    layers ill-conditioned (measured on the CPU: 1e-6 on the input moves them ~10%, against 3e-6 in eval mode), so
    train-mode gradients of two backends can only agree to that floor."""
    cfg = compose_config(overrides)
    torch.manual_seed(0)
    cpu_model = hydra.utils.instantiate(cfg.model, _convert_="all")
    dev_model = copy.deepcopy(cpu_model).to(device)
    loss_fn = hydra.utils.instantiate(cfg.loss)
    imgs, targets = _batches(overrides, batch, 1)[0]
    nudged = imgs + 1e-6 * torch.randn(imgs.shape, generator=torch.Generator().manual_seed(0))
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    old_mish, activations.FAST_MISH = activations.FAST_MISH, False  # torch's F.mish on both sides
    res = {"images": f"{batch} COCO128 images at {cfg.data.img_size} px, float32, TF32 off, random weights"}
    cpu = torch.device("cpu")
    try:
        for mode in ("eval", "train"):
            cpu_model.train(mode == "train")
            dev_model.train(mode == "train")
            ref = _step_grads(cpu_model, loss_fn, imgs, targets, cpu)
            res[mode] = _compare(ref, _step_grads(dev_model, loss_fn, imgs, targets, device))
            res[mode]["floor_cpu_nudged"] = _compare(ref, _step_grads(cpu_model, loss_fn, nudged, targets, cpu))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        activations.FAST_MISH = old_mish
    ev, tr = res["eval"], res["train"]
    res["tolerance"] = (
        "eval: loss and gradients within 1e-4 / 1e-3 relative; "
        "train: loss and gradients within 2x the floor (CPU vs CPU on the nudged images; loss at least 1e-4)"
    )
    res["pass"] = (
        ev["loss_rel_diff"] <= 1e-4
        and ev["grad_rel_l2_all"] <= 1e-3
        and tr["loss_rel_diff"] <= max(1e-4, 2 * tr["floor_cpu_nudged"]["loss_rel_diff"])
        and tr["grad_rel_l2_all"] <= 2 * max(tr["floor_cpu_nudged"]["grad_rel_l2_all"], 1e-4)
    )
    return res


def train_run(overrides: list[str]) -> dict:
    cfg = compose_config(overrides)
    t0 = time.perf_counter()
    result = fit(cfg)
    seconds = time.perf_counter() - t0
    return {
        "overrides": " ".join(overrides),
        "precision": str(cfg.train.precision),
        "num_workers": int(cfg.data.num_workers),
        "epochs": int(cfg.train.max_epochs),
        "seconds": round(seconds, 1),
        # pycocotools' "no ground truth in this size range" is undefined, not 0 (JSON null)
        "metrics": {k: None if math.isnan(v) else round(float(v), 4) for k, v in result.metrics.items()},
    }


def _part(report: dict, name: str, fn, out: Path) -> None:
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as e:  # recorded, and the other parts go on
        report[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
        print(f"gpu_check: part {name} failed: {e}", file=sys.stderr, flush=True)
    report.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    report.setdefault("part_generated", {})[name] = time.strftime("%Y-%m-%d %H:%M")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: {name} done in {report['part_seconds'][name]} s -> {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bagof.cli.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every part on the CPU at smoke size (seconds)")
    ap.add_argument("--out", type=Path, help="JSON to write (default: reports/bench/gpu.json, or outputs/gpu_check/)")
    ap.add_argument("--datasets", help="folder holding coco128/ (default: the config's paths.datasets)")
    ap.add_argument("--parts", default="throughput,parity,train", help="comma-separated subset of the parts")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the end-to-end run (default 5)")
    ap.add_argument("--update", action="store_true", help="keep the parts of an existing --out this run does not redo")
    a = ap.parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if a.dry_run else "cuda")
    out = a.out or (Path("outputs/gpu_check/gpu-dry-run.json") if a.dry_run else COMMITTED)
    torch.set_num_threads(os.cpu_count() or 1)
    data = ["data=coco128", *([f"paths.datasets={a.datasets}"] if a.datasets else [])]
    if a.dry_run:  # the same code paths at smoke size; torch's F.mish, as on a GPU (no CPU kernel to compile)
        activations.FAST_MISH = False
        paper = [*data, "scale=smoke", "model=yolov4", "data.img_size=64"]
        sizes, formats, precisions, steps, warmup, pbatch = [2, 4], ["nchw", "channels_last"], ["32-true"], 1, 1, 2
        n_batches, epochs = 1, 1
        limits = ["train.limit_train_batches=2", "train.limit_val_batches=1", "train.channels_last=true"]
        feats = ["bf16-mixed"]  # Lightning has no float16 autocast on the CPU
    else:
        paper = [*data, "scale=paper", "model=yolov4"]
        sizes, formats, precisions, steps, warmup, pbatch = [8, 32], ["nchw", "channels_last"], [], 10, 3, 4
        precisions = ["32-true", "bf16-mixed"]
        n_batches, epochs, limits = 4, a.epochs, []  # 4 x 32 = all of COCO128
        feats = ["bf16-mixed", "16-mixed"]
    run = [*paper, "logger=none", "train.progress_bar=false", *limits]
    report = {"machine": _machine(device), "dry_run": a.dry_run, "config": " ".join(paper)}
    if a.update and out.is_file():  # a rerun of some parts on the same kind of machine
        old = json.loads(out.read_text())
        if old.get("machine", {}).get("device") != report["machine"]["device"]:
            print(
                f"error: {out} was written on {old.get('machine', {}).get('device')}, not on "
                f"{report['machine']['device']}: drop --update to start a new file",
                file=sys.stderr,
            )
            return 2
        report = {**old, "machine": report["machine"], "config": report["config"]}
    parts = set(a.parts.split(","))
    if "throughput" in parts:
        _part(
            report,
            "throughput",
            lambda: throughput(paper, device, sizes, formats, precisions, steps, warmup, n_batches),
            out,
        )
    if "parity" in parts:
        _part(report, "parity", lambda: parity(paper, device, pbatch), out)
    if "train" in parts:
        _part(
            report, "train", lambda: train_run([*run, f"train.max_epochs={epochs}", f"train.eval_every={epochs}"]), out
        )
        # features run briefly under each autocast: four mini-batches, no burn-in, one evaluation batch
        short = [*paper, "logger=none", "train.progress_bar=false", "train.scheduler.burn_in=0", "train.max_epochs=1"]
        short += ["train.limit_train_batches=4", "train.limit_val_batches=1", "train.eval_every=1"]
        # CmBN (accumulate 2: its statistics span two mini-batches) and SAT on every step: two steps
        amp = [*short, "+bof=[cmbn,sat]", "train.accumulate=2", "train.callbacks.sat.prob=1.0"]
        for p in feats:
            _part(report, f"cmbn_sat_{p}", lambda p=p: train_run([*amp, f"train.precision={p}"]), out)
        # Gaussian YOLO's head and the reference's loss (sigma + 0.3, uc_weight) under AMP: four steps
        gauss = [*short, "+bos=gaussian"]
        for p in feats:
            _part(report, f"gaussian_{p}", lambda p=p: train_run([*gauss, f"train.precision={p}"]), out)
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    print(f"gpu_check: wrote {out}" + (f"; failed parts: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
