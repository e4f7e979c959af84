"""A picture of predictions on a few validation images (an MLflow artifact)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def draw_predictions(task, dataset, n: int = 4, top_k: int | None = None, size: int = 320) -> np.ndarray:
    """Tiles ``n`` validation images with their truths (white) and their ``top_k`` highest-scoring
    detections (green, with class and score), whatever the scores: a half-trained model's best guesses are
    what one wants to see, and a fixed score threshold draws nothing for them. ``top_k`` defaults to the
    image's number of truths (at least 3). Returns RGB."""
    tiles = []
    names = [c["name"] for c in dataset.coco["categories"]]
    task.eval()
    for i in range(min(n, len(dataset))):
        img, boxes, labels, lb = dataset.load(i)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(task.device)
        im = dataset.images[i]
        meta = {"width": im["width"], "height": im["height"], "letterbox": lb}
        det = task.predict_batch(x, [meta])[0].cpu()
        det[:, :4] = torch.from_numpy(lb.forward_boxes(det[:, :4].numpy()))  # back onto the letterboxed image
        canvas = np.ascontiguousarray(img.copy())
        for b in boxes:
            cv2.rectangle(canvas, tuple(map(int, b[:2])), tuple(map(int, b[2:])), (255, 255, 255), 1)
        k = top_k if top_k is not None else max(3, len(boxes))
        for x1, y1, x2, y2, s, c in det[det[:, 4].argsort(descending=True)[:k]].tolist():
            cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), 1)
            cv2.putText(
                canvas,
                f"{names[int(c)]} {s:.2f}",
                (int(x1), max(8, int(y1) - 2)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.3,
                (0, 255, 0),
                1,
                cv2.LINE_AA,
            )
        tiles.append(cv2.resize(canvas, (size, size)))
    return np.concatenate(tiles, 1) if tiles else np.zeros((size, size, 3), np.uint8)
