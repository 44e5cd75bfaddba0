"""The eager per-tensor path runs elementwise kernels (AggMo's, Expectigrad's: ``sliceable``) on cache-sized
slices of large tensors. Slicing must not change a single bit; the ordinary tests use tensors below the slice
size, so here the slice size is shrunk to force many slices, including a partial last one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optbench.optim import AggMo, Expectigrad, _base

OPTIMIZERS = {
    "AggMo": lambda p: AggMo(p, lr=0.05, betas=(0.0, 0.9, 0.99), weight_decay=1e-3),
    "Expectigrad": lambda p: Expectigrad(p, lr=0.01, weight_decay=1e-3),
    "Expectigrad-dense": lambda p: Expectigrad(p, lr=0.01, beta=0.0, sparse_counter=False),
}


def trajectory(make, steps=6):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 10, 3, bias=False), nn.BatchNorm2d(10), nn.ReLU(), nn.Flatten(),
                        nn.Linear(10 * 4 * 4, 7))
    opt = make(net.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 6, 6, generator=gen), torch.randint(0, 7, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_slicing_is_bitwise_neutral(name, monkeypatch):
    whole = trajectory(OPTIMIZERS[name])
    monkeypatch.setattr(_base, "SLICE_ELEMENTS", 90)  # conv weight 10 x 27: rows 3+3+3+1; head 7 x 160: 1
    sliced = trajectory(OPTIMIZERS[name])
    assert torch.equal(whole, sliced)


def test_for_slices_visits_every_row_once(monkeypatch):
    monkeypatch.setattr(_base, "SLICE_ELEMENTS", 10)
    seen = []
    x = torch.zeros(7, 3)
    def visit(a, b):
        seen.append(a.shape[0])
        a.add_(1)

    _base.for_slices(visit, [x, None])
    assert seen == [3, 3, 1] and torch.equal(x, torch.ones(7, 3))
    sums = _base.for_slices(lambda a: a.sum(0), [torch.arange(21.0).reshape(7, 3)])  # results are summed
    torch.testing.assert_close(sums, torch.arange(21.0).reshape(7, 3).sum(0))
