"""Expectigrad against the official implementation (expectigrad.pytorch) and against an independent numpy
implementation of REFERENCE.md sec. 2 on the reference's alternating quadratic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optbench.optim import Expectigrad

official = pytest.importorskip("expectigrad.pytorch")


def numpy_expectigrad(grad_fn, x0, steps, lr, beta, eps, sparse_counter):
    """REFERENCE.md sec. 2 written out per element with numpy, float64."""
    x = np.array(x0, dtype=np.float64)
    s, n, m = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for t in range(1, steps + 1):
        g = grad_fn(x, t)
        s = s + g**2
        n = n + (g != 0) if sparse_counter else np.full_like(x, t)
        a = np.divide(s, n, out=np.zeros_like(x), where=n > 0)  # 0/0 := 0
        u = g / (np.sqrt(a) + eps)
        if beta > 0:
            m = beta * m + (1 - beta) * u
            x = x - lr / (1 - beta**t) * m
        else:
            x = x - lr * u
    return x


def alternating_quadratic_grad(x, t):
    """f_t = 3 x0^2 (t odd), x0^2 + 8 x1^2 (t even): x1's gradient is 0 on odd steps."""
    return np.array([6 * x[0], 0.0]) if t % 2 == 1 else np.array([2 * x[0], 16 * x[1]])


def alternating_quadratic_loss(x: torch.Tensor, t: int) -> torch.Tensor:
    return 3 * x[0] ** 2 if t % 2 == 1 else x[0] ** 2 + 8 * x[1] ** 2


@pytest.mark.parametrize("sparse_counter", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.9])
@pytest.mark.parametrize("foreach", [False, True])
def test_alternating_quadratic_matches_numpy_formula(sparse_counter, beta, foreach):
    lr, eps, steps = 0.01, 1e-8, 1000
    x = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = Expectigrad([x], lr=lr, beta=beta, eps=eps, sparse_counter=sparse_counter, foreach=foreach)
    for t in range(1, steps + 1):
        opt.zero_grad()
        alternating_quadratic_loss(x, t).backward()
        opt.step()
    expected = numpy_expectigrad(alternating_quadratic_grad, [1.0, 1.0], steps, lr, beta, eps, sparse_counter)
    np.testing.assert_allclose(x.detach().numpy(), expected, rtol=1e-12, atol=1e-15)
    assert np.abs(expected).max() < 0.05  # it converges towards the optimum (0, 0)
    if sparse_counter:  # x1 saw a nonzero gradient on the even steps only
        assert opt.state[x]["counter"].tolist() == [steps, steps // 2]


@pytest.mark.parametrize("foreach", [False, True])
def test_sparse_counter_divides_by_the_nonzero_steps_only(foreach):
    """On the alternating quadratic x1's gradient is 0 on odd steps: with sparse_counter its mean square is over
    the even steps only (a larger denominator than the dense mean), so x1 moves less per step; x0, never zero,
    follows the same trajectory either way."""
    xs = {}
    for sparse in (True, False):
        x = nn.Parameter(torch.ones(2, dtype=torch.float64))
        opt = Expectigrad([x], lr=0.01, beta=0.9, sparse_counter=sparse, foreach=foreach)
        for t in range(1, 51):
            opt.zero_grad()
            alternating_quadratic_loss(x, t).backward()
            opt.step()
        xs[sparse] = x.detach().numpy()
    assert xs[True][0] == xs[False][0]
    assert 1.0 > xs[True][1] > xs[False][1] + 1e-3  # both descend; the sparse mean square damps x1's steps


def sparse_feature_net_trajectory(make, steps=100):
    """A linear+ReLU net whose inputs have all-zero features on some batches: exact zero gradients."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    opt = make(net.parameters())
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
        x[:, step % 3 :: 3] = 0.0
        opt.zero_grad()
        nn.functional.mse_loss(net(x), x[:, :1].cos()).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("sparse_counter", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.9])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_official_implementation(sparse_counter, beta, foreach):
    ours = sparse_feature_net_trajectory(
        lambda p: Expectigrad(p, lr=0.01, beta=beta, sparse_counter=sparse_counter, foreach=foreach))
    reference = sparse_feature_net_trajectory(
        lambda p: official.Expectigrad(p, lr=0.01, beta=beta, sparse_counter=sparse_counter))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-13)


def test_first_step_moves_each_coordinate_by_lr_times_sign():
    g = torch.tensor([3.0, -0.02, 1e-4, 0.0, -7.0], dtype=torch.float64)
    x = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    x.grad = g.clone()
    Expectigrad([x], lr=0.1, beta=0.9).step()  # bias correction makes the first momentum step exactly u
    torch.testing.assert_close(x.detach(), -0.1 * g / (g.abs() + 1e-8), rtol=1e-14, atol=0)
    torch.testing.assert_close(x.detach(), -0.1 * torch.sign(g), rtol=1e-3, atol=0)


def test_decoupled_weight_decay_shrinks_by_lr_times_decay():
    x = nn.Parameter(torch.full((3,), 2.0, dtype=torch.float64))
    opt = Expectigrad([x], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        x.grad = torch.zeros_like(x)  # zero gradient: the adaptive step is 0, only the decay acts
        opt.step()
    torch.testing.assert_close(x.detach(), torch.full((3,), 2.0 * 0.95**3, dtype=torch.float64))


def test_sparse_feature_net_exercises_the_counter():
    sparse = sparse_feature_net_trajectory(lambda p: Expectigrad(p, lr=0.01, sparse_counter=True), steps=10)
    dense = sparse_feature_net_trajectory(lambda p: Expectigrad(p, lr=0.01, sparse_counter=False), steps=10)
    assert (sparse - dense).abs().max() > 1e-4
