"""Anchor sets from the reference (REFERENCE.md, "OA"), in pixels of the network input."""

from __future__ import annotations

# YOLOv3 defaults (for 416); the paper's "optimized" anchors for 512.
YOLOV3_ANCHORS = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]]
YOLOV4_512_ANCHORS = [[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146], [142, 110], [192, 243], [459, 401]]
