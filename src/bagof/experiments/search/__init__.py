"""Genetic-algorithm hyperparameter search on Optuna (Table 4 "GA"); see ``driver.run_search``."""

from .evolve import EvolveSampler
from .space import SearchSpace

__all__ = ["EvolveSampler", "SearchSpace"]
