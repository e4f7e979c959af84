"""OpenCV DNN's side of `make bench`'s latency comparison, run in its own interpreter (an OpenCV 4.x, the
last with the Darknet importer; the project's own may be 5.x): ``python bench_opencv.py CFG WEIGHTS IMAGE
THREADS CONF IOU``, then each line ``N`` on stdin times N more inferences and prints their seconds as JSON.

One inference = blob from the letterboxed image, forward, decode (OpenCV's yolo layer already gives
objectness x class probability), class-aware NMS: what a deployment runs, as bagof's side does.
Imports only cv2 and numpy, so any interpreter with OpenCV 4.x runs it.
"""

import json
import sys
import time

import cv2
import numpy as np


def main(cfg, weights, image, threads, conf, iou):
    cv2.setNumThreads(int(threads))
    conf, iou = float(conf), float(iou)
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    names = net.getUnconnectedOutLayersNames()
    img = cv2.imread(image)  # already letterboxed to the network size, BGR on disk
    size = img.shape[1], img.shape[0]

    def infer():
        net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, size, swapRB=True, crop=False))
        out = np.concatenate(net.forward(names))
        scores = out[:, 5:]
        cls = scores.argmax(1)
        best = scores[np.arange(len(out)), cls]
        keep = best > conf
        b, s, c = out[keep, :4] * [size[0], size[1], size[0], size[1]], best[keep], cls[keep]
        boxes = np.column_stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 2], b[:, 3]])
        idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), s.tolist(), c.tolist(), conf, iou) if len(s) else []
        return len(s), len(idx)

    candidates, kept = infer()
    print(json.dumps({"opencv": cv2.__version__, "candidates": candidates, "kept": kept}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            infer()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:7])
