"""Every sweep row's run identity (config hash) at its committed scale and data, seed 0, with the precision and the
memory layout pinned (they are resolved from the machine, so a CPU without bfloat16 would give other hashes).
`python -m tests.row_hashes` writes tests/data/row_hashes.json after a change that is meant to alter results (with
the code-version bump that says why); tests/test_layers.py checks that every other change leaves them as they are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINNED = ["train.precision=bf16-mixed", "train.channels_last=true"]
OUT = ROOT / "tests" / "data" / "row_hashes.json"


def row_hashes() -> dict[str, str]:
    from bagof.experiments.invocation import Invocation, compose_pretrain, compose_row
    from bagof.experiments.spec import load_sweep
    from bagof.identity import config_hash

    out = {}
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        if path.name == "claims.yaml":
            continue
        sweep = load_sweep(path)
        inv = Invocation(sweep.report_scale, sweep.data, sweep.design.seeds)
        for row in sweep.rows:
            if row.missing():
                continue
            if row.pretrain is not None:  # the detector names its classifier's run; the classifier is the identity
                cfg = compose_pretrain(sweep, row, inv, 0)
                out[f"{path.stem} / {row.label} / classifier"] = config_hash(cfg)
                continue
            out[f"{path.stem} / {row.label}"] = config_hash(compose_row(sweep, row, inv, 0, PINNED))
    return out


if __name__ == "__main__":
    hashes = row_hashes()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} row hashes written to {OUT}", file=sys.stderr)
