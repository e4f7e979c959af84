"""The search space, read from config (``search.space``): ``{config key: {low, high, log, gain, broadcast}}``.

``log`` samples on a log scale; ``gain`` is the evolve sampler's per-gene mutation gain (0 freezes a
gene); ``broadcast: n`` writes the value as a list of n copies (e.g. one grid-sensitivity factor for
the three ``model.scale_x_y`` entries). Values become Hydra overrides ``++key=value``.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import FloatDistribution

from ...errors import BagofError


class SearchSpaceError(BagofError):
    pass


@dataclass
class Gene:
    key: str
    low: float
    high: float
    log: bool = False
    gain: float = 1.0
    broadcast: int = 0

    def distribution(self) -> FloatDistribution:
        return FloatDistribution(self.low, self.high, log=self.log)

    def override(self, value: float) -> str:
        v = f"[{', '.join([repr(float(value))] * self.broadcast)}]" if self.broadcast else repr(float(value))
        return f"++{self.key}={v}"

    def clip(self, value: float) -> float:
        return min(max(float(value), self.low), self.high)


class SearchSpace:
    def __init__(self, space: dict):
        self.genes: list[Gene] = []
        for key, spec in (space or {}).items():
            try:
                gene = Gene(key, **dict(spec))
            except TypeError as e:
                raise SearchSpaceError(f"search.space.{key}: {e}; keys are low, high, log, gain, broadcast") from None
            if not gene.low < gene.high or (gene.log and gene.low <= 0):
                raise SearchSpaceError(f"search.space.{key}: need low < high (and low > 0 with log), got {spec}")
            self.genes.append(gene)
        if not self.genes:
            raise SearchSpaceError("search.space is empty: list the config keys to search (conf/search/ga.yaml)")

    def distributions(self) -> dict[str, FloatDistribution]:
        return {g.key: g.distribution() for g in self.genes}

    def gains(self) -> dict[str, float]:
        return {g.key: g.gain for g in self.genes}

    def overrides(self, params: dict[str, float]) -> list[str]:
        return [g.override(params[g.key]) for g in self.genes if g.key in params]

    def defaults(self, cfg: DictConfig) -> dict[str, float]:
        """The base config's current values (clipped into range): the search's first trial."""
        out = {}
        for g in self.genes:
            value = OmegaConf.select(cfg, g.key, default=None)
            if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
                value = value[0] if len(value) else None
            if value is None or isinstance(value, bool):
                value = (g.low * g.high) ** 0.5 if g.log else (g.low + g.high) / 2
            out[g.key] = g.clip(value)
        return out
