"""Learning-rate multipliers per optimizer step (REFERENCE.md "CA" and the training setup).

``burn_in``: Darknet's warm-up ``(step / burn_in) ** power``. ``steps``: the paper's baseline step
decay (x0.1 at 80% and 90% of training: 400k and 450k of 500.5k steps). ``cosine`` (CA):
``lr_min + (lr0 - lr_min) (1 + cos(pi t / T)) / 2`` after the warm-up, optionally with SGDR warm
restarts (first period ``t0`` as a fraction of training, each next period ``t_mult`` times longer).
The factors multiply ``lr0``, so ``min_factor`` is ``lr_min / lr0``. ``poly``: the reference
classifier's ``(1 - step / total) ** power`` (csdarknet53-omega.cfg: power 4).
"""

from __future__ import annotations

import bisect
import math


def steps_policy(total: int, milestones=(0.8, 0.9), scale: float = 0.1):
    marks = [int(m * total) for m in milestones]
    return lambda step: scale ** bisect.bisect_right(marks, step)


def cosine_policy(total: int, burn_in: int = 0, min_factor: float = 0.0, t0: float = 1.0, t_mult: float = 1.0):
    """Cosine annealing over the steps after the warm-up, with warm restarts when ``t0 < 1``."""
    span = max(1, total - burn_in)
    period0 = max(1, round(t0 * span))

    def factor(step: int) -> float:
        t = max(0, step - burn_in)
        period = period0
        while t >= period and t_mult >= 1 and period < span:  # find the current restart cycle
            t -= period
            period = max(1, round(period * t_mult))
        t = min(t, period)
        return min_factor + (1 - min_factor) * (1 + math.cos(math.pi * t / period)) / 2

    return factor


def poly_policy(total: int, power: float = 4.0):
    return lambda step: max(0.0, 1 - step / total) ** power


POLICIES = {"steps": steps_policy, "cosine": cosine_policy, "poly": poly_policy}


def build_lr_lambda(policy: str, total_steps: int, burn_in: int = 0, burn_in_power: float = 4.0, **kwargs):
    if policy not in POLICIES:
        raise ValueError(f"train.scheduler.policy={policy!r}: choose one of {sorted(POLICIES)}")
    if policy == "cosine":
        kwargs["burn_in"] = burn_in
    decay = POLICIES[policy](total_steps, **kwargs)

    def factor(step: int) -> float:
        warm = (step / burn_in) ** burn_in_power if burn_in and step < burn_in else 1.0
        return warm * decay(step)

    return factor
