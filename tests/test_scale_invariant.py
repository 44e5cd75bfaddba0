"""scale_invariant_weights: conv/linear weights directly followed by a normalisation layer."""

from __future__ import annotations

import torch
from torch import nn

from optbench.models import build_model
from optbench.models.scale_invariant import scale_invariant_weights


def test_small_conv_bn_net():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),  # invariant
        nn.Conv2d(4, 4, 3), nn.ReLU(),  # not: no norm after it
        nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4),  # invariant
        nn.Flatten(), nn.Linear(4 * 4, 8), nn.LayerNorm(8),  # invariant
        nn.Linear(8, 2),  # the head: not
    )
    found = scale_invariant_weights(net)
    assert [name for name, _ in found] == ["0.weight", "5.weight", "8.weight"]
    assert [w for _, w in found] == [net[0].weight, net[5].weight, net[8].weight]


def test_invariance_is_real_for_what_it_finds():
    """Scaling a found weight leaves the (training-mode BN) output unchanged; its gradient is orthogonal to it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    x = torch.randn(8, 3, 6, 6)
    out = net(x)
    (name, weight), = scale_invariant_weights(net)
    with torch.no_grad():
        weight.mul_(3.0)  # the conv bias does not matter: batch norm subtracts the channel mean
    torch.testing.assert_close(net(x), out, rtol=1e-4, atol=1e-5)
    net(x).square().sum().backward()
    w, g = weight.detach(), weight.grad
    assert abs(float((g * w).sum())) < 1e-4 * float(g.norm() * w.norm())


def test_resnet18_convolutions():
    model = build_model("resnet18", num_classes=10)
    found = scale_invariant_weights(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(found) == len(convs) == 20  # stem, 16 in blocks, 3 projection shortcuts; not the linear head
