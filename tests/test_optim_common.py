"""Checks every optbench optimizer must pass, parametrised over CASES: argument errors, parameter groups,
step(closure), parameters without gradients, sparse gradients, bfloat16, state_dict resume, lr schedulers,
and the multi-tensor path equal to the per-tensor one.

To add an optimizer: one ``Case(...)`` line in CASES (see the fields of Case).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
from torch import nn

from optbench.optim import AdamHD, Hypergrad, SGDHD
from optbench.optim import SGDP, AdamP, AggMo, Expectigrad, YFOptimizer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[..., torch.optim.Optimizer]  # make(params, **kwargs)
    kwargs: dict  # hyperparameters every check uses
    bad: tuple = ()  # (overrides, regex the ValueError message must match) pairs
    group: dict = field(default_factory=lambda: {"lr": 0.003})  # what a second parameter group overrides
    independent_groups: bool = True  # False: groups are coupled (e.g. one global hypergradient)
    foreach: bool = True  # takes foreach=True/False with two code paths
    lr_owner: bool = False  # True: the optimizer sets its own lr, a scheduler's lr is not what it steps with

    def build(self, params, **overrides) -> torch.optim.Optimizer:
        return self.make(params, **{**self.kwargs, **overrides})


CASES = [
    Case("AggMo", AggMo, dict(lr=0.05, betas=(0.0, 0.9, 0.99), weight_decay=1e-3),
         bad=((dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"), (dict(betas=(0.0, 0.9, 0.9)), "betas"),
              (dict(betas=(0.0, 1.0)), r"betas\[1\]"), (dict(betas=()), "betas"),
              (dict(weight_decay=-1e-4), "weight_decay"))),
    Case("AggMo.from_exp_form", AggMo.from_exp_form, dict(lr=0.05, a=0.1, k=4),
         bad=((dict(a=1.0), "a "), (dict(a=0.0), "a "), (dict(k=0), "k "), (dict(k=2.5), "k "))),
    Case("Expectigrad", Expectigrad, dict(lr=0.01, beta=0.9, weight_decay=1e-3),
         bad=((dict(lr=0.0), "lr"), (dict(beta=1.0), "beta"), (dict(beta=-0.1), "beta"), (dict(eps=0.0), "eps"),
              (dict(weight_decay=-1.0), "weight_decay"), (dict(sparse_counter="yes"), "sparse_counter"))),
    Case("Expectigrad-dense-beta0", Expectigrad, dict(lr=0.01, beta=0.0, sparse_counter=False),
         group={"eps": 1e-3}),
    # Hypergrad's groups share one alpha learned from a hypergradient over all of them: coupled, lr-owning
    Case("Hypergrad-sgd-sgd", Hypergrad, dict(lr=0.05, hypergrad_lr=1e-3, weight_decay=1e-3),
         bad=((dict(lr=-1.0), "lr"), (dict(hypergrad_lr=-1.0), "hypergrad_lr"), (dict(model_opt="x"), "model_opt"),
              (dict(lr_opt="x"), "lr_opt"), (dict(model_opt="sgdn", momentum=1.0), "momentum"),
              (dict(model_opt="adam", betas=(0.9, 1.0)), r"betas\[1\]"), (dict(lr_min=1.0), "lr_min")),
         group={"weight_decay": 1e-2}, independent_groups=False, lr_owner=True),
    Case("Hypergrad-sgdn-sgdn", Hypergrad, dict(lr=0.05, hypergrad_lr=1e-4, model_opt="sgdn", lr_opt="sgdn"),
         group={"momentum": 0.5}, independent_groups=False, lr_owner=True),
    Case("Hypergrad-adam-adam", Hypergrad,
         dict(lr=0.01, hypergrad_lr=1e-4, model_opt="adam", lr_opt="adam", weight_decay=1e-3),
         group={"betas": (0.8, 0.99)}, independent_groups=False, lr_owner=True),
    Case("SGDHD-momentum", SGDHD, dict(lr=0.05, momentum=0.9, hypergrad_lr=1e-3),
         bad=((dict(nesterov=True, momentum=0.0), "nesterov"),),
         group={"dampening": 0.1}, independent_groups=False, lr_owner=True),
    Case("AdamHD-per-tensor", AdamHD, dict(lr=0.01, hypergrad_lr=1e-4, per_tensor=True),
         group={"eps": 1e-6}, independent_groups=False, foreach=False, lr_owner=True),
    Case("AdamP", AdamP, dict(lr=0.01, weight_decay=1e-2),
         bad=((dict(lr=0.0), "lr"), (dict(betas=(0.9,)), "betas"), (dict(betas=(0.9, 1.0)), r"betas\[1\]"),
              (dict(eps=-1e-8), "eps"), (dict(weight_decay=-1.0), "weight_decay"), (dict(delta=0.0), "delta"),
              (dict(wd_ratio=1.5), "wd_ratio"))),
    Case("AdamP-nesterov", AdamP, dict(lr=0.01, weight_decay=1e-2, nesterov=True), group={"wd_ratio": 0.5}),
    Case("SGDP", SGDP, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
         bad=((dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum"), (dict(dampening=2.0), "dampening"),
              (dict(momentum=0.0), "nesterov"), (dict(dampening=0.5), "nesterov"), (dict(delta=-1.0), "delta"),
              (dict(eps=0.0), "eps"), (dict(weight_decay=-1.0), "weight_decay"))),
    Case("SGDP-dampened", SGDP, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
         group={"momentum": 0.5}),
    # lr_factor 100: YellowFin's slow start makes its first steps too small for bfloat16 to resolve otherwise
    Case("YFOptimizer", YFOptimizer, dict(lr=1e-3, weight_decay=1e-3, clip_thresh=10.0, lr_factor=100.0),
         bad=((dict(lr=0.0), "lr"), (dict(mu=1.0), "mu"), (dict(beta=1.0), "beta"),
              (dict(curv_win_width=0), "curv_win_width"), (dict(clip_thresh=0.0), "clip_thresh"),
              (dict(lr_factor=-1.0), "lr_factor"), (dict(weight_decay=-1.0), "weight_decay")),
         group={"weight_decay": 1e-2, "lr_factor": 0.5}, independent_groups=False, lr_owner=True),
    Case("YFOptimizer-closed-loop", YFOptimizer, dict(closed_loop=True, beta=0.9, lr_factor=100.0),
         group={"lr_factor": 2.0}, independent_groups=False, lr_owner=True),
]


def tiny_net() -> nn.Module:
    """Conv -> BatchNorm (a scale-invariant weight: AdamP/SGDP project it), 1-d parameters, a linear head."""
    return nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def make_net(dtype=torch.float64, device="cpu", seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_net().to(device=device, dtype=dtype)


def batch(step: int, dtype, device):
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 2, 6, 6, generator=gen).to(device=device, dtype=dtype)
    y = torch.randint(0, 3, (8,), generator=gen).to(device)
    return x, y


def loss_of(net: nn.Module, step: int) -> torch.Tensor:
    p = next(net.parameters())
    x, y = batch(step, p.dtype, p.device)
    return nn.functional.cross_entropy(net(x).float(), y)


def train(net: nn.Module, opts, steps: range) -> None:
    opts = opts if isinstance(opts, (list, tuple)) else [opts]
    for step in steps:
        for opt in opts:
            opt.zero_grad()
        loss_of(net, step).backward()
        for opt in opts:
            opt.step()


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in net.parameters()])


def two_groups(net: nn.Module, extra: dict) -> list[dict]:
    """The second group, with the overrides, holds the scale-invariant conv weight and the BN weight."""
    params = list(net.parameters())
    return [{"params": params[2:]}, {"params": params[:2], **extra}]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request) -> Case:
    return request.param


def test_bad_arguments_are_clear_errors(case):
    for overrides, message in case.bad:
        with pytest.raises(ValueError, match=message):
            case.build(make_net().parameters(), **overrides)


def test_param_groups_use_their_own_hyperparameters(case):
    grouped = make_net()
    opt = case.build(two_groups(grouped, case.group))
    train(grouped, opt, range(6))

    separate = make_net()
    params = list(separate.parameters())
    opts = [case.build(params[2:]), case.build(params[:2], **case.group)]
    train(separate, opts, range(6))
    ungrouped = make_net()
    train(ungrouped, case.build(ungrouped.parameters()), range(6))
    if case.independent_groups:
        torch.testing.assert_close(flat(grouped), flat(separate), rtol=1e-12, atol=0)
    assert not torch.allclose(flat(grouped), flat(ungrouped), rtol=1e-9, atol=0)


def test_step_with_closure_returns_loss_and_matches_plain_step(case):
    with_closure, plain = make_net(), make_net()
    opt_c, opt_p = case.build(with_closure.parameters()), case.build(plain.parameters())
    for step in range(4):
        def closure():
            opt_c.zero_grad()
            loss = loss_of(with_closure, step)
            loss.backward()
            return loss

        returned = opt_c.step(closure)
        expected = loss_of(plain, step)
        opt_p.zero_grad()
        expected.backward()
        opt_p.step()
        assert torch.is_tensor(returned) and torch.equal(returned.detach(), expected.detach())
    assert torch.equal(flat(with_closure), flat(plain))


def test_parameters_without_grad_are_untouched(case):
    net = make_net()
    unused = nn.Parameter(torch.randn(3, 5, dtype=torch.float64))
    opt = case.build([{"params": list(net.parameters())}, {"params": [unused]}])
    before = unused.detach().clone()
    train(net, opt, range(3))
    assert torch.equal(unused, before)
    assert not opt.state.get(unused)
    assert not torch.equal(flat(net), flat(make_net()))


def test_sparse_gradients_are_a_clear_error(case):
    emb = nn.Embedding(10, 3, sparse=True)
    opt = case.build(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_parameters_follow_float32(case, device):
    nets = {dtype: make_net(dtype, device) for dtype in (torch.float32, torch.bfloat16)}
    with torch.no_grad():  # start from the same (bf16-representable) point
        for p32, p16 in zip(nets[torch.float32].parameters(), nets[torch.bfloat16].parameters()):
            p32.copy_(p16.float())
    start = flat(nets[torch.float32])
    for dtype, net in nets.items():
        train(net, case.build(net.parameters()), range(5))
        assert all(p.dtype == dtype for p in net.parameters())
    moved32 = flat(nets[torch.float32]) - start
    moved16 = flat(nets[torch.bfloat16]) - start
    assert torch.isfinite(moved16).all()
    # bf16 rounds every parameter to 8 bits each step: the displacements agree to a few percent
    assert (moved16 - moved32).norm() <= 0.15 * moved32.norm()


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_resumes_the_same_trajectory(case, device):
    net = make_net(device=device)
    opt = case.build(two_groups(net, case.group))
    train(net, opt, range(4))
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = make_net(device=device, seed=1)
    resumed.load_state_dict(saved["model"])
    opt_resumed = case.build(two_groups(resumed, case.group))
    opt_resumed.load_state_dict(saved["optim"])
    train(net, opt, range(4, 9))
    train(resumed, opt_resumed, range(4, 9))
    assert torch.equal(flat(net), flat(resumed))


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_keeps_bfloat16_state(case, device):
    net = make_net(torch.bfloat16, device)
    opt = case.build(net.parameters())
    train(net, opt, range(3))
    resumed = copy.deepcopy(net)
    opt_resumed = case.build(resumed.parameters())
    opt_resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    train(net, opt, range(3, 6))
    train(resumed, opt_resumed, range(3, 6))
    assert torch.equal(flat(net), flat(resumed))


def test_lr_from_a_scheduler_is_used(case):
    if case.lr_owner:
        pytest.skip("the optimizer tunes its own lr")
    net = make_net()
    opt = case.build(net.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 2 else 0.0)
    for epoch in range(4):
        before = flat(net)
        train(net, opt, range(epoch, epoch + 1))
        schedule.step()
        moved = not torch.equal(flat(net), before)
        assert moved == (epoch < 2), f"epoch {epoch}: lr {opt.param_groups[0]['lr']} but moved={moved}"


@pytest.mark.parametrize("device", DEVICES)
def test_foreach_matches_per_tensor(case, device):
    if not case.foreach:
        pytest.skip("single code path")
    nets = {fe: make_net(device=device) for fe in (False, True)}
    for fe, net in nets.items():
        train(net, case.build(two_groups(net, case.group), foreach=fe), range(12))
    torch.testing.assert_close(flat(nets[True]), flat(nets[False]), rtol=1e-10, atol=1e-12)


def test_foreach_handles_mixed_dtypes(case):
    """One group holding float64, float32 and bfloat16 tensors: the multi-tensor path buckets by dtype."""
    if not case.foreach:
        pytest.skip("single code path")
    results = {}
    for fe in (False, True):
        torch.manual_seed(0)
        params = [nn.Parameter(torch.randn(4, 3, dtype=dt)) for dt in (torch.float64, torch.float32, torch.bfloat16)]
        params.append(nn.Parameter(torch.randn(5, dtype=torch.float32)))
        targets = [torch.randn(p.shape).to(p.dtype) for p in params]
        opt = case.build(params, foreach=fe)
        for _ in range(5):
            opt.zero_grad()
            sum(((p - t).double() ** 2).sum() for p, t in zip(params, targets)).backward()
            opt.step()
        results[fe] = params
    for a, b in zip(results[True], results[False]):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)


def test_every_public_optimizer_derives_from_the_one_base():
    import inspect

    import optbench.optim as optim
    from optbench.optim._base import PaperOptimizer

    public = [getattr(optim, name) for name in optim.__all__ if inspect.isclass(getattr(optim, name))]
    optimizers = [cls for cls in public if issubclass(cls, torch.optim.Optimizer)]
    assert {cls.__name__ for cls in optimizers} == {"AggMo", "Expectigrad", "AdamP", "SGDP", "Hypergrad", "SGDHD",
                                                    "AdamHD", "YFOptimizer"}
    assert all(issubclass(cls, PaperOptimizer) for cls in optimizers)
