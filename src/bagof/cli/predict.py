"""`make predict SOURCE=<image|folder|video> ARGS='model.weights=... data=...'`
(``python -m bagof.cli.predict SOURCE [--out DIR] [--conf 0.25] [--iou 0.45] [overrides]``): detections of
saved weights on images, a folder of images or a video.

Writes into ``--out`` (default ``outputs/predict/<time>/``) one annotated image per input image (a video:
per frame, as ``<name>_<frame>.jpg``) with class names and scores, and ``predictions.json`` in the COCO
results format (``image_id`` is the input's file name, ``category_id`` the class index, ``bbox`` x, y, w, h in
the input's pixels). Class names come from the checkpoint (a bagof run saves its classes in it), else from
``data.classes`` (COCO's 80 names for ``data=coco`` without the dataset: ../shared/reference/darknet-cfg/coco.names),
else are numbers; predictions.json holds them as ``category_name``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..config import compose_config
from ..data.loading import read_rgb
from ..errors import BagofError
from ..ops.letterbox import letterbox
from .eval import inference_model, predict

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def class_names(cfg, model=None) -> list[str]:
    """The names of the class indices: those the checkpoint carries (a bagof run saves them), else the data
    config's list, else COCO's 80 beside the Darknet cfg, else numbers."""
    saved = getattr(model, "bagof_classes", None)
    if saved:
        return list(saved)
    if cfg.data.get("classes"):
        return list(cfg.data.classes)
    names = Path(OmegaConf.select(cfg, "model.darknet_cfg") or "").with_name("coco.names")
    if cfg.data.num_classes == 80 and names.is_file():
        return names.read_text().split("\n")[:80]
    return [str(i) for i in range(cfg.data.num_classes)]


def frames(source: Path) -> tuple[int | None, Iterator[tuple[str, np.ndarray]]]:
    """How many inputs (None if a video does not say), and (name, RGB image) for an image, every image of a folder
    (sorted), or every frame of a video."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise BagofError(f"{source}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    elif source.suffix.lower() in VIDEO_EXTS:
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise BagofError(f"{source}: OpenCV cannot open this video")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return (count if count > 0 else None), _video_frames(cap, source.stem)
    elif source.is_file():
        files = [source]
    else:
        raise BagofError(f"{source}: no such image, folder or video")
    return len(files), _image_files(files)


def _video_frames(cap, stem: str):
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield f"{stem}_{i:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        i += 1
    cap.release()


def _image_files(files: list[Path]):
    for f in files:
        img = read_rgb(f)
        if img is None:
            tqdm.write(f"warning: {f} is truncated or cannot be decoded, skipped", file=sys.stderr)
            continue
        yield f.stem, img


def draw(img: np.ndarray, dets: np.ndarray, names: list[str]) -> np.ndarray:
    out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    scale = max(img.shape[:2]) / 640
    for x1, y1, x2, y2, s, c in dets.tolist():
        colour = tuple(int(v) for v in np.random.default_rng(int(c)).integers(64, 256, 3))
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, max(1, round(2 * scale)))
        label = f"{names[int(c)] if int(c) < len(names) else int(c)} {s:.2f}"
        cv2.putText(
            out,
            label,
            (int(x1), max(12, int(y1) - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * scale,
            colour,
            max(1, round(scale)),
            cv2.LINE_AA,
        )
    return out


def run(source: str, out: str | None, conf: float, iou: float, overrides: list[str]) -> Path:
    cfg = compose_config(overrides)
    model = inference_model(cfg)
    names = class_names(cfg, model)
    folder = Path(out or Path(cfg.paths.root) / "outputs" / "predict" / time.strftime("%Y%m%d-%H%M%S"))
    folder.mkdir(parents=True, exist_ok=True)
    post = {**OmegaConf.to_container(cfg.train.postprocess), "conf_thresh": conf, "iou_thresh": iou}
    size, results, n = cfg.data.img_size, [], 0
    total, inputs = frames(Path(source).expanduser())
    bar = tqdm(inputs, total=total, unit="img", desc="predict", file=sys.stderr, dynamic_ncols=True)
    for name, img in bar:
        boxed, lb = letterbox(img, size)
        x = torch.from_numpy(boxed).permute(2, 0, 1)[None].float().div(255)
        meta = {"width": img.shape[1], "height": img.shape[0], "letterbox": lb}
        dets = predict(model, x, [meta], post, str(cfg.train.precision))[0].float().numpy()
        cv2.imwrite(str(folder / f"{name}.jpg"), draw(img, dets, names))
        for x1, y1, x2, y2, s, c in dets.tolist():
            label = names[int(c)] if int(c) < len(names) else str(int(c))
            results.append(
                {
                    "image_id": name,
                    "category_id": int(c),
                    "category_name": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
        n += 1
        bar.set_postfix(detections=len(results), refresh=False)
    (folder / "predictions.json").write_text(json.dumps(results))
    print(f"bagof predict: {n} annotated images and predictions.json in {folder}")
    return folder


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bagof.cli.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="an image, a folder of images, or a video")
    p.add_argument("--out", help="output folder (default outputs/predict/<time>)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (Darknet's detector test: 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    args, overrides = p.parse_known_args(argv)
    try:
        run(args.source, args.out, args.conf, args.iou, overrides)
    except BagofError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
