"""AdamP and SGDP against the official implementation (pip adamp) on a conv net with batch norm, the projection
on constructed gradients, and the 1-d parameters against torch's AdamW / SGD."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optbench.models.scale_invariant import scale_invariant_weights
from optbench.optim import SGDP, AdamP
from optbench.optim.adamp import radial_projection

adamp = pytest.importorskip("adamp")


def conv_bn_net(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).to(dtype)


def batches(steps: int, dtype):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        yield torch.randn(8, 3, 6, 6, generator=gen, dtype=dtype), torch.randint(0, 4, (8,), generator=gen)


def train(make, steps=100, dtype=torch.float64):
    net = conv_bn_net(dtype)
    opt = make(net.parameters())
    for x, y in batches(steps, dtype):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, opt


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in net.parameters()])


SETTINGS = [dict(nesterov=False, weight_decay=0.0), dict(nesterov=True, weight_decay=0.0),
            dict(nesterov=False, weight_decay=1e-2), dict(nesterov=True, weight_decay=1e-2)]
IDS = ["plain", "nesterov", "wd", "nesterov-wd"]


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
@pytest.mark.parametrize("foreach", [False, True])
def test_adamp_matches_official(settings, foreach):
    ours, opt = train(lambda p: AdamP(p, lr=1e-2, foreach=foreach, **settings))
    official, official_opt = train(lambda p: adamp.AdamP(p, lr=1e-2, **settings))
    torch.testing.assert_close(flat(ours), flat(official), rtol=1e-10, atol=1e-12)
    for p, q in zip(ours.parameters(), official.parameters()):
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], official_opt.state[q]["exp_avg_sq"])


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
@pytest.mark.parametrize("foreach", [False, True])
def test_sgdp_matches_official(settings, foreach):
    settings = {**settings, "weight_decay": settings["weight_decay"] * 10}
    ours, opt = train(lambda p: SGDP(p, lr=0.1, momentum=0.9, foreach=foreach, **settings))
    official, official_opt = train(lambda p: adamp.SGDP(p, lr=0.1, momentum=0.9, **settings))
    torch.testing.assert_close(flat(ours), flat(official), rtol=1e-10, atol=1e-12)
    for p, q in zip(ours.parameters(), official.parameters()):  # without nesterov the buffer is projected too
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], official_opt.state[q]["momentum"],
                                   rtol=1e-10, atol=1e-12)


def test_sgdp_with_dampening_matches_official():
    ours, _ = train(lambda p: SGDP(p, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-3))
    official, _ = train(lambda p: adamp.SGDP(p, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-3))
    torch.testing.assert_close(flat(ours), flat(official), rtol=1e-10, atol=1e-12)


def test_float32_adamp_matches_official_to_rounding():
    ours, _ = train(lambda p: AdamP(p, lr=1e-2, weight_decay=1e-2), dtype=torch.float32)
    official, _ = train(lambda p: adamp.AdamP(p, lr=1e-2, weight_decay=1e-2), dtype=torch.float32)
    assert (flat(ours) - flat(official)).norm() <= 1e-6 * flat(official).norm()


def test_the_test_net_triggers_the_projection():
    """The oracle comparisons above exercise the projection: conv weights before BN are found scale-invariant
    (ratio = wd_ratio), the linear head is not."""
    net = conv_bn_net()
    x, y = next(batches(1, torch.float64))
    nn.functional.cross_entropy(net(x), y).backward()
    invariant = {id(w) for _, w in scale_invariant_weights(net)}
    assert len(invariant) == 2
    for p in net.parameters():
        if p.dim() > 1:
            _, ratio = radial_projection(p, p.grad, p.grad, delta=0.1, eps=1e-8, wd_ratio=0.1)
            assert ratio.item() == pytest.approx(0.1 if id(p) in invariant else 1.0)


def random_rows(rows=6, cols=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, cols, generator=gen, dtype=torch.float64),
            torch.randn(rows, cols, generator=gen, dtype=torch.float64))


def test_projection_channel_view_removes_the_radial_part_of_every_row():
    p, g = random_rows()
    g = g - (g * p).sum(1, keepdim=True) / (p * p).sum(1, keepdim=True) * p  # orthogonal per row
    update = torch.randn(p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    c, ratio = radial_projection(p, g, update, delta=0.1, eps=1e-8, wd_ratio=0.25)
    projected = update - c * p
    assert ratio.item() == 0.25
    # exactly orthogonal up to the eps in 1 / (||p|| + eps)^2
    torch.testing.assert_close((projected * p).sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-6, rtol=0)
    tangent = update - (update * p).sum(1, keepdim=True) / (p * p).sum(1, keepdim=True) * p
    torch.testing.assert_close(projected, tangent, rtol=1e-6, atol=1e-12)  # eps in ||p|| + eps only


def test_projection_layer_view_when_rows_are_not_orthogonal_but_the_layer_is():
    p, noise = random_rows()
    noise = noise - (noise * p).sum(1, keepdim=True) / (p * p).sum(1, keepdim=True) * p
    alpha = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.25, -0.25], dtype=torch.float64)
    alpha = alpha / (p * p).sum(1)  # sum_rows alpha_row ||p_row||^2 = 0: orthogonal as a whole
    g = noise + alpha[:, None] * p
    assert abs((g * p).sum()) < 1e-12
    update = torch.randn(p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    c, ratio = radial_projection(p, g, update, delta=0.1, eps=1e-8, wd_ratio=0.1)
    projected = update - c * p
    assert ratio.item() == pytest.approx(0.1)
    assert torch.all(c == c.flatten()[0])  # one coefficient for the whole tensor
    assert abs((projected * p).sum()) < 1e-6
    assert (projected * p).sum(1).abs().max() > 1e-3  # rows keep radial parts: not the channel view


def test_projection_leaves_non_invariant_updates_alone():
    p, g = random_rows()
    g = g + 3 * p  # strongly aligned with the weight
    c, ratio = radial_projection(p, g, g, delta=0.1, eps=1e-8, wd_ratio=0.1)
    assert ratio.item() == 1.0 and torch.all(c == 0)


def test_delta_threshold_scales_with_row_length():
    p, g = random_rows(rows=1, cols=10000)
    g = g - (g * p).sum() / (p * p).sum() * p
    g = g + 0.05 / math.sqrt(10000) * g.norm() / p.norm() * p  # |cos| = 0.05 / sqrt(n) < 0.1 / sqrt(n)
    _, ratio = radial_projection(p, g, g, delta=0.1, eps=1e-8, wd_ratio=0.1)
    assert ratio.item() == pytest.approx(0.1)
    _, ratio = radial_projection(p, g, g, delta=0.04, eps=1e-8, wd_ratio=0.1)
    assert ratio.item() == 1.0


def vector_trajectory(make, steps=30):
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(7, dtype=torch.float64)), nn.Parameter(torch.randn(3, dtype=torch.float64))]
    opt = make(params)
    for step in range(steps):
        opt.zero_grad()
        sum(((p - math.sin(step)) ** 2).sum() for p in params).backward()
        opt.step()
    return torch.cat([p.detach() for p in params])


def test_adamp_on_vectors_is_adamw():
    ours = vector_trajectory(lambda p: AdamP(p, lr=0.05, weight_decay=0.1))
    adamw = vector_trajectory(lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1))
    torch.testing.assert_close(ours, adamw, rtol=1e-12, atol=1e-14)


def test_sgdp_on_vectors_is_sgd_with_momentum():
    ours = vector_trajectory(lambda p: SGDP(p, lr=0.05, momentum=0.9, nesterov=True))
    sgd = vector_trajectory(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True))
    torch.testing.assert_close(ours, sgd, rtol=1e-12, atol=1e-14)


def test_projection_slows_weight_norm_growth():
    """The paper's point on a real conv-BN net: momentum inflates the norm of scale-invariant weights;
    SGDP's projection keeps it lower than plain momentum SGD."""
    def invariant_norm(make):
        net, _ = train(make, steps=60)
        return sum(w.norm() ** 2 for _, w in scale_invariant_weights(net)).sqrt().item()

    start = sum(w.norm() ** 2 for _, w in scale_invariant_weights(conv_bn_net())).sqrt().item()
    sgd = invariant_norm(lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, nesterov=True))
    sgdp = invariant_norm(lambda p: SGDP(p, lr=0.5, momentum=0.9, nesterov=True))
    assert sgd > 1.2 * start
    assert sgdp < start + 0.25 * (sgd - start)
