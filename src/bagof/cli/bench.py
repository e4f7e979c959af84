"""`make bench`: figures, not assertions. Prints and writes ``reports/bench/bench.json``.

Every comparison runs both sides in this one invocation, alternated in rounds (the machine is shared and
noisy), and reports both figures and their ratio:

- training images/s at ``cpu`` scale for YOLOv4 and the ablation tables' CSPResNeXt50-PANet-SPP, the training
  step as code 0.3.0 ran it (float32, NCHW, torch's ``F.mish``, AdamW's single-tensor loop) against today's (the
  scale's precision and memory layout, the fast CPU Mish, AdamW's foreach path; the SPP chain is in both);
- inference latency of the paper-scale YOLOv4 at 416x416, batch 1, on a real letterboxed image, decode and
  NMS included (conf 0.25, Darknet's ``detector test`` default): code 0.3.0's (unfused, ``F.mish``, float32),
  ``bagof predict``'s (BN folded, fast Mish, the paper scale's precision and layout), the folded network in
  float32, and OpenCV DNN's Darknet importer on the same network (yolov4.cfg with our weights, exported) when
  an OpenCV 4.x interpreter is found: ``BAGOF_OPENCV_PYTHON``, or this one if its cv2 is 4.x (the dev extra);
- evaluation time of the validation split at ``cpu`` scale (forward + decode + NMS + pycocotools).

Both kinds of CPU in one invocation: the training and evaluation parts run natively, then again in a subprocess
that emulates a CPU without native bfloat16 (most users'): ``ONEDNN_MAX_CPU_ISA=AVX2`` limits oneDNN to AVX2 (no
AVX-512, no AMX, no bf16 instructions), ``ATEN_CPU_CAPABILITY=avx2`` ATen's vectorised kernels and the Mish
kernel's compiler (Inductor reads it), and with them ``${fast_precision:}`` resolves to float32. The report
records what the emulation changed (ATen's capability, Inductor's ISA, oneDNN's ISA as ONEDNN_VERBOSE states it,
the precision picked) under ``avx2_emulation``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch

from ..config import compose_config, fast_precision
from ..eval import coco_evaluate, to_coco_results
from ..models.fuse import fuse_conv_bn
from ..models.layers import activations
from ..ops.letterbox import letterbox
from ..ops.postprocess import detect, postprocess
from ..train import build_task
from ..utils.allocator import keep_freed_memory
from ..utils.precision import autocast_for
from .eval import for_inference

DARKNET_CFG = "reference/darknet-cfg/yolov4.cfg"  # under the shared folder beside the datasets


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def _variant(fast: bool, precision: str = "32-true"):
    """The fast CPU Mish on or off, and autocast as Lightning's ``precision`` sets it."""
    old = activations.FAST_MISH
    activations.FAST_MISH = fast
    try:
        with autocast_for(precision):
            yield
    finally:
        activations.FAST_MISH = old


def _alternate(variants: dict, run, rounds: int) -> dict[str, list[float]]:
    """``run(name)`` -> seconds, called for each variant in turn, ``rounds`` times (the order flips each round)."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            times[n].append(run(n))
    return times


def bench_train(overrides, rounds: int = 6, steps: int = 8) -> dict:
    cfg = compose_config(["scale=cpu", *overrides])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    model = hydra.utils.instantiate(cfg.model, _convert_="all").train()
    loss = hydra.utils.instantiate(cfg.loss)
    layout = torch.channels_last if cfg.train.get("channels_last") else torch.contiguous_format
    # each side's own copy of the model (its memory layout) and training step, as the loop builds it
    after = copy.deepcopy(model).to(memory_format=layout)
    tasks = {"before": build_task(cfg, model, loss), "after": build_task(cfg, after, loss)}
    # each side's optimizer step: the single-tensor loop of code 0.3.0-0.4.0, the foreach one the task builds now
    opts = {n: torch.optim.AdamW(t.parameters(), lr=1e-4, foreach=n == "after") for n, t in tasks.items()}
    batches = [b[:2] for _, b in zip(range(steps), dm.train_dataloader())]
    variants = {"before": (False, "32-true"), "after": (True, str(cfg.train.precision))}

    def run(name):
        with _variant(*variants[name]):
            for imgs, targets in batches[:1]:  # warm-up step (first use compiles)
                _step(tasks[name], opts[name], imgs, targets)
            t0 = time.perf_counter()
            for imgs, targets in batches:
                _step(tasks[name], opts[name], imgs, targets)
            return time.perf_counter() - t0

    n_imgs = sum(len(b[0]) for b in batches)
    times = _alternate(variants, run, rounds)
    ips = {n: n_imgs * len(t) / sum(t) for n, t in times.items()}
    return {
        "config": f"scale=cpu {' '.join(overrides)}".strip(),
        "model": f"{cfg.model.backbone} ({cfg.model.backbone_act}) {cfg.model.neck}",
        "img_size": cfg.data.img_size,
        "batch_size": cfg.data.batch_size,
        "steps_per_side": rounds * steps,
        "before": "float32, NCHW, torch F.mish, single-tensor AdamW (code 0.3.0's step)",
        "after": f"precision {cfg.train.precision}, fast CPU Mish, foreach AdamW"
        + (", channels_last" if layout == torch.channels_last else ""),
        "images_per_s_before": ips["before"],
        "images_per_s_after": ips["after"],
        "speedup": ips["after"] / ips["before"],
        "peak_rss_mb": _peak_rss_mb(),
    }


def _step(task, opt, imgs, targets):
    loss, _ = task.compute_loss(imgs, targets)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _real_image(cfg, size: int) -> np.ndarray:
    """A COCO128 image letterboxed to ``size`` (RGB), or a synthetic one where the dataset is absent."""
    folder = Path(cfg.paths.datasets) / "coco128" / "images" / "train2017"
    files = sorted(folder.glob("*.jpg"))[:1]
    img = cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2RGB) if files else None
    if img is None:
        img = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    return letterbox(img, size)[0]


def _opencv_python() -> str | None:
    if os.environ.get("BAGOF_OPENCV_PYTHON"):
        return os.environ["BAGOF_OPENCV_PYTHON"]
    return sys.executable if hasattr(cv2.dnn, "readNetFromDarknet") else None


class _OpenCV:
    """The OpenCV DNN side, a persistent subprocess (bench_opencv.py) asked for N timed inferences at a time."""

    def __init__(self, python: str, cfg: Path, model, image: np.ndarray, threads: int, conf: float, iou: float):
        from ..darknet.convert import export_darknet

        self.dir = tempfile.TemporaryDirectory(prefix="bagof-bench-")
        weights = export_darknet(model, cfg, Path(self.dir.name) / "yolov4.weights")  # the very same network
        png = Path(self.dir.name) / "input.png"
        cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        script = Path(__file__).with_name("bench_opencv.py")
        args = [python, str(script), str(cfg), str(weights), str(png), str(threads), str(conf), str(iou)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def time(self, n: int) -> list[float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.dir.cleanup()


def bench_latency(threads: int, size: int = 416, rounds: int = 4, repeats: int = 5, conf: float = 0.25) -> dict:
    cfg = compose_config(["scale=paper", "data=coco", f"data.img_size={size}"])
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, _convert_="all").eval()
    image = _real_image(cfg, size)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    post = {"conf_thresh": conf, "iou_thresh": 0.45, "max_det": 300}
    precision = str(cfg.train.precision)
    # (network, fast Mish, precision): code 0.3.0's inference; `bagof predict`'s (folded, the paper scale's layout
    # and precision); the same folded network in float32 NCHW, OpenCV DNN's arithmetic
    sides = {
        "before": (model, False, "32-true"),
        "after": (for_inference(model, cfg), True, precision),
        "after_float32": (fuse_conv_bn(model), True, "32-true"),
    }
    counts = {}

    def ours(name):
        net, fast, prec = sides[name]
        times = []
        with _variant(fast, prec), torch.inference_mode():
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                dets = postprocess(net.decode(net(x)).float(), **post)
                if i:  # the first of each round warms up
                    times.append(time.perf_counter() - t0)
        counts[name] = len(dets[0])
        return times

    opencv, py = None, _opencv_python()
    cfg_path = Path(cfg.paths.datasets).parent / DARKNET_CFG
    if py and cfg_path.is_file():
        opencv = _OpenCV(py, cfg_path, model, image, threads, conf, 0.45)
        sides["opencv"] = None
    runs = _alternate(sides, lambda n: opencv.time(repeats) if n == "opencv" else ours(n), rounds)
    med = {n: 1000 * statistics.median([t for r in ts for t in r]) for n, ts in runs.items()}
    out = {
        "model": "yolov4 (paper scale, 80 classes, random init)",
        "input": f"{size}x{size} letterboxed COCO128 image",
        "batch": 1,
        "postprocess": post,
        "latency_ms_median_before": med["before"],
        "latency_ms_median_after": med["after"],
        "latency_ms_median_after_float32": med["after_float32"],
        "before": "unfused conv-BN, torch F.mish, float32, NCHW (code 0.3.0)",
        "after": f"as `bagof predict` runs it: conv-BN folded, fast CPU Mish, {precision}, "
        + ("NHWC" if cfg.train.get("channels_last") else "NCHW"),
        "after_float32": "conv-BN folded, fast CPU Mish, float32, NCHW",
        "detections": counts,
        "note": "random weights score below any threshold (objectness prior 0.01), so these figures are the "
        "forward + decode of both runtimes; the NMS cost at a trained model's load is in eval_cpu_scale",
        "timed_runs_per_side": rounds * repeats,
    }
    if opencv:
        out |= {
            "latency_ms_median_opencv": med["opencv"],
            "opencv": opencv.info,
            "ratio_after_to_opencv": med["after"] / med["opencv"],
            "ratio_after_float32_to_opencv": med["after_float32"] / med["opencv"],
            "ratio_before_to_opencv": med["before"] / med["opencv"],
        }
        opencv.close()
    else:
        out["opencv"] = f"skipped: no OpenCV 4.x interpreter (set BAGOF_OPENCV_PYTHON) or no {cfg_path}"
    return out


def bench_eval(overrides) -> dict:
    cfg = compose_config(["scale=cpu", *overrides])
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    model = hydra.utils.instantiate(cfg.model, _convert_="all").eval()
    cats = dm.categories
    post = dict(cfg.train.postprocess)
    with _variant(True, str(cfg.train.precision)), torch.inference_mode():
        model(next(iter(dm.val_dataloader()))[0])  # warm-up (compiles the fast Mish)
        t0 = time.perf_counter()
        results = []
        for imgs, _, metas in dm.val_dataloader():
            for d, meta in zip(detect(model, imgs, metas, post), metas):
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


EMULATE_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def isa_state() -> dict:
    """What this process computes with: ATen's CPU capability, Inductor's vector ISA, oneDNN's ISA (from a
    probe with ONEDNN_VERBOSE in a subprocess of the same environment) and the precision the cpu scale picks."""
    from torch._inductor import cpu_vec_isa

    probe = subprocess.run(
        [sys.executable, "-c", "import torch; torch.nn.functional.conv2d(torch.randn(1, 64, 56, 56), "
         "torch.randn(64, 64, 3, 3).to(memory_format=torch.channels_last))"],
        env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    isa = next((ln.split("isa:", 1)[1].split(",")[0].strip() for ln in probe.stdout.splitlines() if "isa:" in ln), "?")
    return {
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "inductor_isa": str(cpu_vec_isa.pick_vec_isa()),
        "onednn_isa": isa,
        "precision": fast_precision(),
    }


def bench_avx2(argv: list[str]) -> dict:
    """The training and evaluation parts again in a subprocess that emulates an AVX2-only CPU."""
    env = {**os.environ, **EMULATE_AVX2, "BAGOF_BENCH_PART": "emulated"}
    out = subprocess.run(
        [sys.executable, "-m", "bagof.cli.bench", *argv], env=env, capture_output=True, text=True, timeout=3600
    )
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.split("BENCH-JSON:", 1)[1])


def main(argv: list[str]) -> None:
    threads = int(os.environ.get("BAGOF_THREADS", os.cpu_count() or 1))
    # process-wide, as every training run sets it: both sides of each pair run with it, so the ratios leave its
    # gain out (the end-to-end comparison of whole runs has it)
    keep_freed_memory()
    if os.environ.get("BAGOF_BENCH_PART") == "emulated":  # the subprocess of bench_avx2
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        part = {
            "env": EMULATE_AVX2,
            "state": isa_state(),
            "train_cpu_scale": [bench_train(argv), bench_train(["model=cspresnext50_panet_spp", *argv])],
            "eval_cpu_scale": bench_eval(argv),
        }
        print("BENCH-JSON:" + json.dumps(part))
        return
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "make bench" + (f" ARGS='{' '.join(argv)}'" if argv else ""),
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": threads,
            "bf16_native": fast_precision() == "bf16-mixed",
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "torch": torch.__version__,
        "native": isa_state(),
        "train_cpu_scale": [bench_train(argv), bench_train(["model=cspresnext50_panet_spp", *argv])],
        "eval_cpu_scale": bench_eval(argv),
        "latency_paper_yolov4": bench_latency(threads),
        "avx2_emulation": bench_avx2(argv),
    }
    print(json.dumps(report, indent=2))
    out = Path(os.environ.get("BAGOF_ROOT", ".")) / "reports" / "bench" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
