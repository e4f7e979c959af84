import math

import pytest

from bagof.tasks.schedules import build_lr_lambda


def test_burn_in_then_steps():
    f = build_lr_lambda("steps", total_steps=100, burn_in=10)
    assert f(5) == pytest.approx((5 / 10) ** 4)  # Darknet's (it / burn_in)^4 warm-up
    assert f(10) == 1.0 and f(79) == 1.0
    assert f(80) == pytest.approx(0.1) and f(90) == pytest.approx(0.01)  # x0.1 at 80% and 90%


def test_cosine_hits_its_end_points():
    f = build_lr_lambda("cosine", total_steps=110, burn_in=10, min_factor=0.01)
    assert f(10) == pytest.approx(1.0)  # starts at lr0 after warm-up
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half way: (1 + cos(pi/2)) / 2
    assert f(110) == pytest.approx(0.01)  # ends at lr_min
    t = 35 - 10
    assert f(35) == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * t / 100)) / 2)


def test_cosine_warm_restarts():
    f = build_lr_lambda("cosine", total_steps=70, burn_in=0, min_factor=0.0, t0=1 / 7, t_mult=2.0)
    # periods 10, 20, 40 steps: the factor returns to 1 at steps 10 and 30
    assert f(9) < 0.05 and f(10) == pytest.approx(1.0) and f(30) == pytest.approx(1.0)
    assert f(20) == pytest.approx(0.5)  # middle of the second period


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="train.scheduler.policy='exponential'"):
        build_lr_lambda("exponential", total_steps=10)


def test_poly_is_the_reference_classifier_decay():
    f = build_lr_lambda("poly", total_steps=100, burn_in=0, power=4)
    assert f(0) == 1.0 and f(100) == 0.0 and f(50) == pytest.approx(0.5**4)
