"""The papers' synthetic tasks, driven by a small manual loop (the trainer's order: loss, backward, step,
after_step): Reddi's counterexample (Adam drifts to +1, Expectigrad goes to -1), the alternating quadratic, and
AdamP's toy (momentum inflates the weight norm 1 -> 2.93 / 27.9, SGDP does not)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from optbench.optim import SGDP, Expectigrad
from optbench.tasks import build_task


def make_task(kind: str, steps: int, **overrides):
    """The task as configs/task/<kind>.yaml defines it (the one place its constants live), with overrides."""
    cfg = OmegaConf.to_container(compose(f"task={kind}").task, resolve=True)
    cfg.update(steps_per_epoch=steps, **overrides)
    return build_task(cfg, "", torch.device("cpu"))


def drive(task, make_optimizer, seed=0):
    opt = make_optimizer(task.model.parameters())
    for batch in task.train_batches(torch.Generator().manual_seed(seed)):
        opt.zero_grad()
        loss, _ = task.loss(batch)
        loss.backward()
        opt.step()
        task.after_step()
    return task


def test_reddi_theorem_instance_adam_drifts_to_plus_one_expectigrad_to_minus_one():
    """REFERENCE.md sec. 2: f_t = C x (t mod 3 == 1) else -x with C = 3; Adam with beta1 = 0 and
    beta2 = 1 / (1 + C^2) ends at the worst point +1; Expectigrad at the optimum -1."""
    cfg = dict(rare=3.0, common=-1.0, period=3)
    adam = drive(make_task("reddi", 2000, **cfg), lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.0, 1 / (1 + 9))))
    expectigrad = drive(make_task("reddi", 2000, **cfg), lambda p: Expectigrad(p, lr=0.01))
    assert adam.extras()["x"] > 0.95
    assert expectigrad.extras()["x"] < -0.95
    assert expectigrad.evaluate("train")["loss"] < 0.02 < adam.evaluate("train")["loss"]


def test_reddi_experiment_adam_drifts_to_plus_one():
    """Reddi's experiment: 1010 x every 101 steps, else -10 x; Adam(0.9, 0.99) heads to +1. (Expectigrad's
    drift to -1 here is slow, 0.1 lr per period in the steady state: the stochastic test below shows it.)"""
    adam = drive(make_task("reddi", 5000), lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.99)))
    assert adam.extras()["x"] > 0.85
    assert adam.evaluate("train")["loss"] == pytest.approx(10 / 101 * (adam.extras()["x"] + 1))


def test_reddi_stochastic_adam_goes_up_expectigrad_goes_down():
    adam = drive(make_task("reddi_stochastic", 5000), lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.99)))
    expectigrad = drive(make_task("reddi_stochastic", 5000), lambda p: Expectigrad(p, lr=0.05))
    assert adam.extras()["x"] > 0.6
    assert expectigrad.extras()["x"] < -0.6


def test_reddi_iterate_stays_in_the_box_and_counts_steps():
    task = drive(make_task("reddi", 300, x0=0.9), lambda p: torch.optim.SGD(p, lr=0.05))
    assert -1.0 <= task.extras()["x"] <= 1.0
    assert task.state_dict() == {"t": 300}
    resumed = make_task("reddi", 300)
    resumed.load_state_dict(task.state_dict())
    batches = list(resumed.train_batches(torch.Generator()))
    assert resumed.t == 600  # the counter continues from the checkpoint: batches are t = 301..600
    assert batches[3] == 1010.0 and batches[4] == -10.0  # t = 304 = 3 * 101 + 1 is rare
    rare_steps = [i + 301 for i, b in enumerate(batches) if b == 1010.0]
    assert all(t % 101 == 1 for t in rare_steps) and rare_steps


def test_reddi_rejects_a_problem_whose_optimum_is_not_minus_one():
    with pytest.raises(ValueError, match="mean slope"):
        make_task("reddi", 10, rare=100.0, common=-10.0, period=101)


def test_alternating_quadratic_loss_and_extras():
    task = make_task("alt_quadratic", 1000, x0=[1.0, 1.0])
    assert task.evaluate("train")["loss"] == pytest.approx(6.0)
    drive(task, lambda p: Expectigrad(p, lr=0.01))
    extras = task.extras()
    assert abs(extras["x0"]) < 0.05 and abs(extras["x1"]) < 0.05
    assert task.evaluate("val")["loss"] == pytest.approx(2 * extras["x0"] ** 2 + 4 * extras["x1"] ** 2)


def test_adamp_toy_momentum_inflates_the_norm_and_sgdp_does_not():
    """REFERENCE.md sec. 4: the weight norm grows 1 -> 2.93 (momentum 0.9) and 27.87 (0.99) under momentum SGD;
    the projection keeps it near 1 while reaching the same objective."""
    norms = {}
    for name, make in [("sgd0.9", lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)),
                       ("sgd0.99", lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.99)),
                       ("sgdp0.9", lambda p: SGDP(p, lr=0.02, momentum=0.9)),
                       ("sgdp0.99", lambda p: SGDP(p, lr=0.02, momentum=0.99))]:
        task = make_task("adamp_toy", 500)
        assert task.extras()["weight_norm"] == pytest.approx(1.0, abs=1e-6)
        drive(task, make)
        norms[name] = task.extras()["weight_norm"]
        assert task.evaluate("train")["loss"] < -0.99  # aligned with w*
    assert norms["sgd0.9"] == pytest.approx(2.93, abs=0.01)
    assert norms["sgd0.99"] == pytest.approx(27.87, rel=0.01)
    assert norms["sgdp0.9"] < 1.2 and norms["sgdp0.99"] < 2.0


def test_adamp_toy_gradient_is_orthogonal_to_the_weight():
    task = make_task("adamp_toy", 1, w0=[0.3, -2.0], w_star=[1.0, 1.0])
    loss, _ = task.loss(None)
    loss.backward()
    w, g = task.model.x.detach().view(-1), task.model.x.grad.view(-1)
    assert abs(float(w @ g)) < 1e-6 * float(w.norm() * g.norm())
    assert float(loss.detach()) == pytest.approx(-(0.3 - 2.0) / math.sqrt(2) / math.hypot(0.3, 2.0), rel=1e-6)
