"""AggMo against torch_optimizer.AggMo (the official math) and the paper's stability claim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optbench.optim import AggMo

torch_optimizer = pytest.importorskip("torch_optimizer")

EXP_FORM_K4 = tuple(1.0 - 0.1**i for i in range(4))  # 0, 0.9, 0.99, 0.999


def mlp(dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)


def train(make, steps: int, dtype=torch.float64) -> tuple[nn.Module, torch.optim.Optimizer]:
    net = mlp(dtype)
    opt = make(net.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 5, generator=gen, dtype=dtype)
        y = torch.sin(x.sum(1, keepdim=True))
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return net, opt


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in net.parameters()])


@pytest.mark.parametrize("betas", [(0.0, 0.9, 0.99), EXP_FORM_K4, (0.5, 0.95)], ids=["default", "exp-k4", "no-zero"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_official_implementation(betas, weight_decay, foreach):
    ours, opt = train(lambda p: AggMo(p, lr=0.05, betas=betas, weight_decay=weight_decay, foreach=foreach), 100)
    official, official_opt = train(
        lambda p: torch_optimizer.AggMo(p, lr=0.05, betas=betas, weight_decay=weight_decay), 100)
    torch.testing.assert_close(flat(ours), flat(official), rtol=1e-10, atol=1e-12)
    # the stored EMAs are the paper's velocities scaled by (1 - beta)
    for p, q in zip(ours.parameters(), official.parameters()):
        buffers = opt.state[p]["momentum_buffers"]
        damped = [b for b in betas if b != 0.0]
        assert len(buffers) == len(damped)
        for beta, m in zip(damped, buffers):
            torch.testing.assert_close(m / (1 - beta), official_opt.state[q]["momentum_buffer"][beta],
                                       rtol=1e-10, atol=1e-12)


def test_float32_matches_official_to_rounding():
    ours, _ = train(lambda p: AggMo(p, lr=0.05, betas=EXP_FORM_K4, weight_decay=1e-2), 100, torch.float32)
    official, _ = train(lambda p: torch_optimizer.AggMo(p, lr=0.05, betas=EXP_FORM_K4, weight_decay=1e-2), 100,
                        torch.float32)
    assert (flat(ours) - flat(official)).norm() <= 1e-6 * flat(official).norm()


def test_exp_form_gives_the_paper_betas():
    p = [nn.Parameter(torch.zeros(2))]
    assert AggMo.from_exp_form(p, lr=0.1).param_groups[0]["betas"] == pytest.approx((0.0, 0.9, 0.99))
    assert AggMo.from_exp_form(p, lr=0.1, a=0.1, k=4).param_groups[0]["betas"] == pytest.approx(EXP_FORM_K4)
    assert AggMo.from_exp_form(p, lr=0.1, a=0.5, k=2, weight_decay=0.1).param_groups[0]["weight_decay"] == 0.1


def test_single_beta_zero_is_plain_sgd():
    ours, _ = train(lambda p: AggMo(p, lr=0.05, betas=(0.0,)), 20)
    sgd, _ = train(lambda p: torch.optim.SGD(p, lr=0.05), 20)
    torch.testing.assert_close(flat(ours), flat(sgd), rtol=1e-12, atol=1e-14)


def test_large_damping_stays_stable_where_classical_momentum_oscillates():
    """The paper's claim on an ill-conditioned quadratic: betas up to 0.999 converge when aggregated with
    smaller ones; classical momentum with 0.999 alone keeps oscillating at the same lr."""
    curvature = torch.tensor([1.0, 100.0], dtype=torch.float64)

    def final_loss(make, steps=300):
        x = nn.Parameter(torch.ones(2, dtype=torch.float64))
        opt = make([x])
        for _ in range(steps):
            opt.zero_grad()
            loss = 0.5 * (curvature * x**2).sum()
            loss.backward()
            opt.step()
        return loss.item()

    start = 0.5 * curvature.sum().item()
    assert final_loss(lambda p: AggMo(p, lr=0.01, betas=(0.0, 0.9, 0.999))) < 1e-3 * start
    assert final_loss(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.999)) > 0.1 * start
