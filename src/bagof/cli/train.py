"""`bagof train [overrides]` (= `python run.py [overrides]`): train and evaluate one config, logged to MLflow.

Overrides are Hydra's: `data=bccd scale=cpu seed=1`, a toggle `+bof=mosaic`, several in one run
`'+bof=[mosaic,ciou]'`, one run per toggle `+bof=mosaic,ciou -m` (-m, --multirun: anywhere on the line).
Prints the run's AP/AP50/AP75 and its MLflow run id; `bagof train --cfg job` prints the composed config.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ..config import CONFIG_DIR
from ..errors import BagofError


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    from ..train import train

    try:
        return train(cfg)
    except BagofError as e:  # bad input or options: the message says what to do; no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def multirun_flag_first(argv: list[str]) -> list[str]:
    """``-m``/``--multirun`` anywhere among the overrides: Hydra 1.3's argparse takes it only before them
    (``python run.py +bof=mosaic,ciou -m scale=cpu`` fails with "unrecognized arguments" otherwise)."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return argv[:1] + flags[:1] + [a for a in argv[1:] if a not in ("-m", "--multirun")] if flags else argv


def run(args: list[str], prog: str = "run.py") -> int:
    """Runs the Hydra app on ``args`` as if they were its command line."""
    sys.argv = multirun_flag_first([prog, *args])
    hydra_main()
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
