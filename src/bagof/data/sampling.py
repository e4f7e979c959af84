"""Per-sample randomness: every random draw of a training sample comes from (run seed, epoch, sample index).

A training sample's augmentation (flips, colour, Mosaic's partners and centre, MixUp's partner and weight, ...)
is drawn from a generator made for that sample alone, ``numpy.random.default_rng([seed, epoch, index])``, and
albumentations' own generator is reseeded from it before the transform runs. So a run is the same whether its
samples are made on the training thread or by any number of loader workers, in any order; the order of the
samples is a pure function of (seed, epoch) too. The samplers below hand the dataset keys ``(index, size,
epoch)`` (``size``: a multi-scale step's input size, else None), since a loader worker's copy of the dataset
cannot see the epoch the main process is in.

torch's samplers draw the order from torch's generator and give the dataset a bare index, and albumentations
seeds once per worker; neither ties a draw to its sample, hence this module.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


def sample_key(key, default_epoch: int = 0) -> tuple[int, int | None, int]:
    """(index, size, epoch) from what a sampler handed the dataset: an int, (index, size), or (index, size, epoch)."""
    if isinstance(key, tuple):
        if len(key) == 3:
            return int(key[0]), key[1], int(key[2])
        return int(key[0]), key[1], default_epoch
    return int(key), None, default_epoch


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def seed_transform(transform, rng: np.random.Generator) -> None:
    """Reseeds an albumentations pipeline (its own generators) from the sample's generator."""
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(rng.integers(2**32)))


class EpochSampler(Sampler):
    """The samples of an epoch in an order drawn from (seed, epoch), each as a key ``(index, None, epoch)``.

    Lightning calls ``set_epoch`` before each epoch; where it cannot reach this sampler (under DDP it wraps
    it), each pass counts as the next epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        return iter([(int(i), None, epoch) for i in order])

    def __len__(self) -> int:
        return self.n
