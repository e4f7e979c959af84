"""Hydra entry point: `python run.py [overrides]`, `python run.py +bof=mosaic,ciou -m`."""
import hydra
from omegaconf import DictConfig

from bagof.config import CONFIG_DIR
from bagof.train import train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
