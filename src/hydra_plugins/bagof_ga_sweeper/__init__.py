"""Hydra sweeper plugin ``hydra/sweeper=bagof_ga``: `python run.py -m hydra/sweeper=bagof_ga +search=ga ...`
runs bagof's GA search (bagof.experiments.search.driver) with the command's overrides as the base config.

Our own plugin rather than hydra-optuna-sweeper, which pins optuna < 3 (this project uses Optuna 5).
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class BagofGASweeperConf:
    _target_: str = "hydra_plugins.bagof_ga_sweeper.ga_sweeper.BagofGASweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="bagof_ga", node=BagofGASweeperConf, provider="bagof")
