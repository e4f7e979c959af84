"""What a table invocation asks for (scale, data, seeds, overrides) and the configs it composes for its rows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from omegaconf import DictConfig

from ..config import compose_config
from ..features import check_features
from .spec import TASKS, Row, Sweep


@dataclass
class Invocation:
    """What a `make tableN` call asked for; stored as the parent run's params and tags."""

    scale: str
    data: str
    seeds: int
    jobs: int = 1
    force: bool = False
    extra: tuple[str, ...] = ()
    launcher: str = "local"
    slurm: tuple[str, ...] = ()  # key=value options for submitit (partition=..., gpus_per_node=...)
    command: str = ""  # the command line, for the report's header
    row_seeds: dict[str, int] = field(default_factory=dict)  # seeds per row where an old invocation varied them

    def seeds_of(self, label: str) -> int:
        return self.row_seeds.get(label, self.seeds)

    def follows(self, sweep: Sweep) -> bool:
        """Whether this invocation trains the sweep's declared design (else its report is exploratory)."""
        return self.seeds == sweep.design.seeds and not self.row_seeds

    def overrides(self, sweep: Sweep, row: Row, seed: int) -> list[str]:
        return [
            f"task={TASKS[sweep.task]}",
            f"data={self.data}",
            f"scale={self.scale}",
            *sweep.overrides,
            *row.hydra_overrides(self.scale),
            *self.extra,
            f"seed={seed}",
            f"experiment={sweep.name}",
        ]


def compose_row(sweep: Sweep, row: Row, inv: Invocation, seed: int, extra: list[str] = ()) -> DictConfig:
    """The row's config; contradictory toggles or a table run without MLflow fail here, at config time."""
    cfg = compose_config(inv.overrides(sweep, row, seed) + list(extra))
    check_features(cfg)
    if "_target_" not in cfg.logger:
        raise ValueError("table rows are logged to MLflow: remove logger=none from the overrides")
    return cfg


def compose_pretrain(sweep: Sweep, row: Row, inv: Invocation, seed: int) -> DictConfig:
    """The classifier a Table 6 row starts from: its own data (default the CIFAR-10 subset), task=classify,
    its toggles; not the table's detection overrides nor the command's extra overrides."""
    pre = row.pretrain_row()
    cls_sweep = replace(sweep, task="classification", overrides=[])
    return compose_row(cls_sweep, pre, replace(inv, data=row.pretrain.get("data", "cifar10_subset"), extra=()), seed)


def compose_base() -> DictConfig:
    return compose_config(["logger=mlflow"])
