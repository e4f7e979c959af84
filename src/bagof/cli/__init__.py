"""Command-line entry points besides `run.py` (training, Hydra) and `python -m bagof.experiments` (tables), each
``python -m bagof.cli.<name> [Hydra overrides]`` composing the config through ``config.compose_config``:

- ``summary``: the composed model's layers, parameters and BFLOPs (no dataset needed);
- ``anchors``: optimized anchors (OA) of a dataset -> conf/anchors/<data>.yaml (`make anchors`);
- ``eval``: COCO evaluation of saved weights without training (`make eval`);
- ``predict``: annotated images and COCO-format detections for images, a folder or a video (`make predict`);
- ``export``: ONNX (decoding in the graph) or Darknet ``.weights`` (`make export`);
- ``bench``: the benchmarks -> reports/bench/bench.json (`make bench`).
"""
