import math
from types import SimpleNamespace

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


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_foreach_steps_equal_the_single_tensor_loop_bit_for_bit(name):
    """The task's optimizer takes the foreach path for speed; its updates must be the reference single-tensor
    loop's exactly (else the result cache would mix two arithmetics under one code version). Darknet's decay
    split is checked too: conv weights decayed, BN parameters and biases not."""
    import torch
    from torch import nn

    from bagof.tasks.base import TrainingTask

    class Task(TrainingTask):
        def __init__(self):
            super().__init__(
                {"name": name, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.05}, {"policy": "steps", "burn_in": 0}
            )
            torch.manual_seed(0)
            self.model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1, bias=True))

    task = Task()
    type(task).trainer = property(lambda self: SimpleNamespace(estimated_stepping_batches=10))
    try:
        opt = task.configure_optimizers()["optimizer"]
    finally:
        del type(task).trainer
    assert opt.defaults["foreach"] is True
    assert [p.ndim for p in opt.param_groups[0]["params"]] == [4, 4] and opt.param_groups[0]["weight_decay"] == 0.05
    assert all(p.ndim == 1 for p in opt.param_groups[1]["params"]) and opt.param_groups[1]["weight_decay"] == 0.0

    params = [p for g in opt.param_groups for p in g["params"]]
    start = [p.detach().clone() for p in params]
    ref_params = [p.clone().requires_grad_() for p in start]
    n0 = len(opt.param_groups[0]["params"])
    groups = [
        {**g, "params": ps, "foreach": False} for g, ps in zip(opt.param_groups, (ref_params[:n0], ref_params[n0:]))
    ]
    ref = type(opt)(groups, lr=opt.defaults["lr"])  # every other setting is the groups' own
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        for p, q in zip(params, ref_params):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    assert all(torch.equal(p, q) for p, q in zip(params, ref_params))
    assert not any(torch.equal(p, s) for p, s in zip(params, start))  # every tensor was updated


def test_the_papers_recipe_is_a_config_choice(compose):
    """optim=paper: the reference's [net] optimiser (yolov4.cfg) in place of the cpu scale's AdamW, its lengths as
    fractions of training; without it the run is what it was (no key added to the run identity)."""
    from bagof.identity import identity

    cfg = compose(["data=bccd", "optim=paper"])
    assert dict(cfg.train.optimizer) == {"name": "sgd", "lr": 0.0013, "momentum": 0.949, "weight_decay": 0.0005}
    sched = cfg.train.scheduler
    f = build_lr_lambda(sched.policy, 1000, burn_in=round(sched.burn_in * 1000), burn_in_power=sched.burn_in_power)
    assert f(1) == pytest.approx((1 / 2) ** 4) and f(2) == 1.0  # Darknet's (step / burn_in) ** 4 warm-up
    assert f(799) == 1.0 and f(800) == pytest.approx(0.1) and f(900) == pytest.approx(0.01)
    plain = compose(["data=bccd"])
    assert plain.train.optimizer.name == "adamw" and "optim" not in identity(plain)
