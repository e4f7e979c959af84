"""Random training shapes and DM, dynamic mini-batch size (REFERENCE.md "Random training shapes", "DM").

Every ``every`` mini-batches the training input size is drawn from the multiples of 32 in
[``scale_range[0]``, ``scale_range[1]``] x the nominal size (reference: ~0.7x to 1.4x). With
``dynamic_batch`` the mini-batch size follows ``b = b0 * S0^2 / S^2`` (rounded, at least 1), so every
step sees about the same number of pixels. The sampler yields ``(index, size, epoch)`` keys (see ``sampling``);
the dataset resizes its (nominal-size) sample to ``size``. Each epoch's plan is a pure function of (seed, epoch),
so ``len()`` is exact and the learning-rate schedule knows the number of steps.
Written here because torch's samplers have a fixed batch size.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


class MultiScaleBatchSampler(Sampler):
    def __init__(
        self,
        n: int,
        batch_size: int,
        img_size: int,
        every: int = 10,
        scale_range: tuple[float, float] = (0.7, 1.4),
        dynamic_batch: bool = False,
        multiple: int = 32,
        drop_last: bool = True,
        shuffle: bool = True,
        seed: int = 0,
    ):
        lo, hi = scale_range
        self.sizes = [s for s in range(multiple, int(img_size * hi) + 1, multiple) if s >= img_size * lo]
        if not self.sizes:
            raise ValueError(
                f"no multiple of {multiple} in {scale_range} x {img_size}: widen data.multiscale.scale_range"
            )
        self.n, self.batch_size, self.img_size, self.every = n, batch_size, img_size, max(1, every)
        self.dynamic_batch, self.drop_last, self.shuffle, self.seed = dynamic_batch, drop_last, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before each epoch
        self.epoch = epoch

    def batch_for(self, size: int) -> int:
        if not self.dynamic_batch:
            return self.batch_size
        return max(1, round(self.batch_size * self.img_size**2 / size**2))

    def plan(self, epoch: int) -> list[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        batches, pos = [], 0
        while pos < self.n:
            if len(batches) % self.every == 0:
                size = int(rng.choice(self.sizes))
                bs = self.batch_for(size)
            idx = order[pos : pos + bs]
            if len(idx) < bs and self.drop_last and batches:
                break
            batches.append([(int(i), size, epoch) for i in idx])
            pos += bs
        return batches

    def __iter__(self):
        yield from self.plan(self.epoch)

    def __len__(self) -> int:
        return len(self.plan(self.epoch))
