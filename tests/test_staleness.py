"""Simulated asynchrony (optbench.staleness.DelayedGradients): which gradient each update applies, tau = 0 is
ordinary training, no copies and a bounded queue, exact resume, and the paper's premise that asynchrony adds
momentum to plain momentum SGD (measured on the iterates, against a first-order prediction)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from optbench.staleness import DelayedGradients
from optbench.tasks.quadratic import NoisyQuadratic


def test_update_k_applies_the_gradient_computed_at_iterate_k_minus_tau():
    tau = 3
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([x], lr=0.1)
    delay = DelayedGradients([x], tau)
    iterates = [x.detach().clone()]  # x_k: the parameters before update k
    applied = []
    for iteration in range(12):
        (0.5 * (x * x).sum()).backward()  # gradient = the iterate it is computed at
        due = delay.push()
        assert due == (iteration >= tau)
        if due:
            applied.append(x.grad.clone())
            opt.step()
            iterates.append(x.detach().clone())
        else:
            assert x.grad is None  # while the pipeline fills, nothing can be applied by mistake
        opt.zero_grad(set_to_none=True)
    assert len(applied) == 12 - tau
    for k, gradient in enumerate(applied):
        assert torch.equal(gradient, iterates[max(0, k - tau)]), k


def test_zero_staleness_is_ordinary_training():
    def train(use_delay: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        delay = DelayedGradients(model.parameters(), 0) if use_delay else None
        for k in range(10):
            inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(k))
            model(inputs).pow(2).mean().backward()
            grads = [p.grad for p in model.parameters()]
            if delay is not None:
                assert delay.push() is True
                assert all(p.grad is g for p, g in zip(model.parameters(), grads))  # untouched
                assert all(delay.fresh_grad(p) is p.grad for p in model.parameters())
            opt.step()
            opt.zero_grad()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(train(True), train(False))


def test_gradients_are_handed_over_without_copies_and_the_queue_stays_at_tau():
    tau = 2
    x = torch.nn.Parameter(torch.ones(3))
    delay = DelayedGradients([x], tau)
    produced = []
    for k in range(6):
        (x * (k + 1.0)).sum().backward()
        produced.append(x.grad)
        fresh = x.grad
        due = delay.push()
        assert delay.fresh_grad(x) is fresh
        if due:
            assert x.grad is produced[k - tau]  # the very tensor backward() produced tau iterations earlier
            assert torch.equal(x.grad, torch.full((3,), k - tau + 1.0))
        assert len(delay) == min(k + 1, tau)
        x.grad = None


def test_state_dict_round_trip_resumes_the_same_trajectory():
    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)

    def train(model, opt, delay, start, stop):
        for k in range(start, stop):
            inputs = torch.randn(4, 3, generator=torch.Generator().manual_seed(k))
            model(inputs).pow(2).mean().backward()
            if delay.push():
                opt.step()
            opt.zero_grad(set_to_none=True)

    model, opt = make()
    delay = DelayedGradients(model.parameters(), 4)
    train(model, opt, delay, 0, 7)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "delay": delay.state_dict()}, buffer)
    train(model, opt, delay, 7, 15)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, resumed_opt = make()
    resumed_model.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["opt"])
    resumed_delay = DelayedGradients(resumed_model.parameters(), 4)
    resumed_delay.load_state_dict(saved["delay"])
    assert len(resumed_delay) == 4
    train(resumed_model, resumed_opt, resumed_delay, 7, 15)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_staleness_is_refused():
    x = torch.nn.Parameter(torch.ones(2))
    state = DelayedGradients([x], 2).state_dict()
    with pytest.raises(ValueError, match="staleness 2"):
        DelayedGradients([x], 3).load_state_dict(state)


@pytest.mark.parametrize("tau", [-1, 1.5, True])
def test_invalid_staleness_is_a_clear_error(tau):
    with pytest.raises(ValueError, match="tau .* must be an integer >= 0"):
        DelayedGradients([torch.nn.Parameter(torch.ones(1))], tau)


def total_momentum_of_momentum_sgd(tau: int, mu: float = 0.5, lr: float = 0.01, steps: int = 150) -> tuple:
    """Median over steps of REFERENCE.md's estimator, median over coordinates of
    (x_{t+1} - x_t + lr grad f(x_t)) / (x_t - x_{t-1}), for torch's momentum SGD under staleness tau on a
    noiseless quadratic (50 curvatures log-spaced over [1, 10])."""
    task = NoisyQuadratic("q", 50, 1.0, 10.0, 0.0, steps, 1, 1.0, torch.device("cpu"))
    x = task.model.x
    opt = torch.optim.SGD([x], lr=lr, momentum=mu)
    delay = DelayedGradients([x], tau)
    iterates, fresh, estimates = [x.detach().clone()], [], []
    for batch in task.train_batches(torch.Generator().manual_seed(0)):
        opt.zero_grad(set_to_none=True)
        task.loss(batch)[0].backward()
        fresh_grad = x.grad.detach().clone()  # the gradient at the current iterate, before the delay
        if delay.push():
            opt.step()
            iterates.append(x.detach().clone())
            fresh.append(fresh_grad)
            if len(iterates) >= 3:
                ratio = (iterates[-1] - iterates[-2] + lr * fresh[-1]) / (iterates[-2] - iterates[-3])
                estimates.append(float(torch.nanmedian(ratio)))
    return float(np.median(estimates[20:])), float(task.curvatures.median())


def test_asynchrony_begets_momentum_in_plain_momentum_sgd():
    mu, lr = 0.5, 0.01
    synchronous, _ = total_momentum_of_momentum_sgd(0, mu, lr)
    assert synchronous == pytest.approx(mu, abs=1e-4)
    measured = {}
    for tau in (1, 3):
        measured[tau], h_median = total_momentum_of_momentum_sgd(tau, mu, lr)
        # first order: x_t - x_{t-tau} ~ -tau lr v, so the stale gradient adds tau * lr * h per coordinate
        assert measured[tau] - mu == pytest.approx(tau * lr * h_median, rel=0.1), tau
    assert mu < measured[1] < measured[3]
