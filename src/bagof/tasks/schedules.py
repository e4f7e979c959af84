"""Learning-rate multipliers per optimizer step (REFERENCE.md "CA" and the training setup).

``burn_in``: Darknet's warm-up ``(step / burn_in) ** power``. ``steps``: the paper's baseline step
decay (x0.1 at 80% and 90% of training: 400k and 450k of 500.5k steps).
"""
from __future__ import annotations

import bisect


def steps_policy(total: int, milestones=(0.8, 0.9), scale: float = 0.1):
    marks = [int(m * total) for m in milestones]
    return lambda step: scale ** bisect.bisect_right(marks, step)


POLICIES = {"steps": steps_policy}


def build_lr_lambda(policy: str, total_steps: int, burn_in: int = 0, burn_in_power: float = 4.0, **kwargs):
    if policy not in POLICIES:
        raise ValueError(f"train.scheduler.policy={policy!r}: choose one of {sorted(POLICIES)}")
    decay = POLICIES[policy](total_steps, **kwargs)

    def factor(step: int) -> float:
        warm = (step / burn_in) ** burn_in_power if burn_in and step < burn_in else 1.0
        return warm * decay(step)

    return factor
