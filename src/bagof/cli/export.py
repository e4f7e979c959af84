"""`make export ARGS='model.weights=... data=...'` (``python -m bagof.cli.export [--format onnx|darknet]
[--out FILE] [overrides]``): saved weights as a file another runtime reads.

- ``onnx`` (default): the network and its box decoding, input ``images`` (batch, 3, size, size) in [0, 1],
  RGB, letterboxed to ``data.img_size``; output ``detections`` (batch, N, 5 + classes): cx, cy, w, h in input
  pixels, objectness, class probabilities, i.e. ``YoloDetector.decode``'s output. NMS stays outside the graph
  (score = objectness x class probability, then class-aware NMS, as bagof.ops.postprocess does). The batch
  dimension is dynamic. The file is checked with onnxruntime against torch on a random input (the max abs
  difference is printed). Needs the ``onnx`` extra (onnx, onnxscript, onnxruntime).
- ``darknet``: a ``.weights`` file in the layout of ``model.darknet_cfg`` (for Darknet or OpenCV DNN 4.x);
  the model must be the network that cfg describes (paper scale, its class count).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from ..config import compose_config
from ..errors import BagofError
from .eval import load_model
from .predict import class_names


class Decoded(nn.Module):
    """The detector followed by its box decoding: one tensor out, as deployment runtimes expect."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.model(images))


def export_onnx(model: nn.Module, size: int, out: Path, names: list[str] | None = None) -> float:
    """Writes ``out`` (with the class names as the metadata ``names``, a JSON list, as ultralytics' exports carry
    them); returns the max abs difference of onnxruntime's output from torch's (batch of 2)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BagofError("ONNX export needs the onnx extra: pip install -e '.[onnx]'") from None
    net = Decoded(model).eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        net, (x,), str(out), input_names=["images"], output_names=["detections"],
        dynamic_shapes={"images": {0: batch}}, dynamo=True, optimize=True,
    )  # fmt: skip
    if names:
        import json

        import onnx

        proto = onnx.load(str(out))
        onnx.helper.set_model_props(proto, {"names": json.dumps(list(names))})
        onnx.save(proto, str(out))
    with torch.no_grad():
        ref = net(x).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    return float(abs(got - ref).max())


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bagof.cli.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=("onnx", "darknet"), default="onnx")
    p.add_argument("--out", help="output file (default outputs/export/<model>.<onnx|weights>)")
    args, overrides = p.parse_known_args(argv)
    try:
        cfg = compose_config(overrides)
        model = load_model(cfg)
        ext = "onnx" if args.format == "onnx" else "weights"
        out = Path(args.out or Path(cfg.paths.root) / "outputs" / "export" / f"{cfg.model.backbone}.{ext}")
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "darknet":
            from ..darknet.convert import export_darknet

            if not Path(cfg.model.darknet_cfg).is_file():
                raise BagofError(
                    f"--format darknet: model.darknet_cfg={cfg.model.darknet_cfg} is not a file "
                    "(set BAGOF_DARKNET_CFG to the folder of the reference cfgs, or model.darknet_cfg=<.cfg>)"
                )
            try:
                export_darknet(model, cfg.model.darknet_cfg, out)
            except ValueError as e:
                raise BagofError(f"--format darknet: {e}") from None
            out.with_suffix(".names").write_text("\n".join(class_names(cfg, model)) + "\n")  # Darknet's names file
            print(f"bagof export: {out} and {out.with_suffix('.names')} (Darknet, for {cfg.model.darknet_cfg})")
        else:
            diff = export_onnx(model, cfg.data.img_size, out, class_names(cfg, model))
            print(f"bagof export: {out} (ONNX; onnxruntime vs torch max abs difference {diff:.2e})")
    except BagofError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
