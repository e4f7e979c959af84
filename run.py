"""Hydra entry point: `python run.py [overrides]`, `python run.py +bof=mosaic,ciou -m`."""

import sys

import hydra
from omegaconf import DictConfig

from bagof.config import CONFIG_DIR
from bagof.errors import BagofError
from bagof.train import train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
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


if __name__ == "__main__":
    sys.argv = multirun_flag_first(sys.argv)
    main()
