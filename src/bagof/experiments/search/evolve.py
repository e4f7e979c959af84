"""The YOLOv3/YOLOv5 "evolve" GA as an Optuna sampler (REFERENCE.md "GA").

Each new trial takes a parent from the ``top`` best finished trials by fitness-weighted choice
(weights ``fitness - min + 1e-6``), multiplies every gene by a factor
``1 + gain * [u < mutation_prob] * N(0, 1) * r * sigma`` (one ``r ~ U(0, 1)`` per child, redrawn until
some gene changes) clipped to ``clip`` (default [0.3, 3]), and clips the result to the gene's bounds.
Until a first trial has finished, it samples uniformly (on the log scale where set). Every draw of a
trial comes from a generator seeded by (seed, trial number): a search is reproducible, and drivers that
share a study (whose trial numbers are unique) never propose the same candidate. Written on
Optuna's sampler API because Optuna ships no multiplicative-mutation GA; NSGAIISampler (crossover +
mutation) is the library alternative, selectable in config.
"""

from __future__ import annotations

import numpy as np
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState


class EvolveSampler(BaseSampler):
    def __init__(
        self,
        gains: dict[str, float] | None = None,
        top: int = 5,
        mutation_prob: float = 0.8,
        sigma: float = 0.2,
        clip: tuple[float, float] = (0.3, 3.0),
        seed: int | None = None,
    ):
        self.gains = dict(gains or {})
        self.top, self.mutation_prob, self.sigma, self.clip = top, mutation_prob, sigma, tuple(clip)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._rngs: dict[int, np.random.Generator] = {}  # trial number -> its own generator
        self._children: dict[int, dict[str, float]] = {}  # trial number -> its mutated genes

    def reseed_rng(self) -> None:
        self.seed = None
        self._rng = np.random.default_rng()

    def _trial_rng(self, number: int) -> np.random.Generator:
        if number not in self._rngs:
            self._rngs[number] = np.random.default_rng(None if self.seed is None else [self.seed, number])
        return self._rngs[number]

    def infer_relative_search_space(self, study, trial):
        return {}  # every gene is drawn in sample_independent, mutated from a parent chosen per trial

    def sample_relative(self, study, trial, search_space):
        return {}

    def parent(self, study) -> dict | None:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        if not done:
            return None
        best = sorted(done, key=lambda t: t.value, reverse=True)[: self.top]
        fit = np.array([t.value for t in best], dtype=float)
        w = fit - fit.min() + 1e-6
        return dict(best[int(self._rng.choice(len(best), p=w / w.sum()))].params)

    def mutate(self, parent: dict[str, float], distributions: dict[str, FloatDistribution]) -> dict[str, float]:
        keys = list(parent)
        gains = np.array([self.gains.get(k, 1.0) for k in keys], dtype=float)
        if not (gains > 0).any():
            return dict(parent)
        factors = np.ones(len(keys))
        while (factors == 1).all():  # mutate until at least one gene changes (the reference loop)
            draw = (self._rng.random(len(keys)) < self.mutation_prob) * self._rng.standard_normal(len(keys))
            factors = (gains * draw * self._rng.random() * self.sigma + 1).clip(*self.clip)
        child = {}
        for k, f in zip(keys, factors):
            d = distributions.get(k)
            v = parent[k] * f
            child[k] = float(min(max(v, d.low), d.high)) if d is not None else float(v)
        return child

    def before_trial(self, study, trial):
        self._rng = self._trial_rng(trial.number)
        parent = self.parent(study)
        if parent is not None:
            dists = {}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                dists.update(t.distributions)
            self._children[trial.number] = self.mutate(parent, dists)

    def after_trial(self, study, trial, state, values):
        self._children.pop(trial.number, None)
        self._rngs.pop(trial.number, None)

    def sample_independent(self, study, trial, param_name, param_distribution):
        child = self._children.get(trial.number)
        if child is not None and param_name in child:
            return child[param_name]
        d, rng = param_distribution, self._trial_rng(trial.number)
        if getattr(d, "log", False):
            return float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))))
        return float(rng.uniform(d.low, d.high))
