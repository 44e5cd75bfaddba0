"""The fused CPU path (optim/_fused.py: the per-tensor update compiled by torch.compile) must follow the same
trajectory as the per-tensor path, resume from a state_dict, handle 16-bit parameters, be chosen only where
the docs say, and fall back to eager with a warning when compilation fails.

The nets are small, so each kernel compiles in seconds; the kernels are shared by all tests of a process."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from optbench.optim import SGDP, AdamP, AggMo, Expectigrad, _base, _fused

OPTIMIZERS = {
    "AggMo": lambda p, **k: AggMo(p, lr=0.05, betas=(0.0, 0.9, 0.99), weight_decay=1e-3, **k),
    "AggMo-k4": lambda p, **k: AggMo.from_exp_form(p, lr=0.05, a=0.1, k=4, **k),
    "Expectigrad": lambda p, **k: Expectigrad(p, lr=0.01, weight_decay=1e-3, **k),
    "Expectigrad-dense-beta0": lambda p, **k: Expectigrad(p, lr=0.01, beta=0.0, sparse_counter=False, **k),
    "AdamP": lambda p, **k: AdamP(p, lr=0.01, weight_decay=1e-2, **k),
    "AdamP-nesterov": lambda p, **k: AdamP(p, lr=0.01, weight_decay=1e-2, nesterov=True, **k),
    "SGDP": lambda p, **k: SGDP(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, **k),
    "SGDP-dampened": lambda p, **k: SGDP(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3, **k),
}


def make_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    # conv before batch norm: scale-invariant, so AdamP/SGDP take their projection branch on it
    return nn.Sequential(nn.Conv2d(3, 10, 3, bias=False), nn.BatchNorm2d(10), nn.ReLU(), nn.Flatten(),
                         nn.Linear(10 * 4 * 4, 7)).to(dtype)


def train(net: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    dtype = next(net.parameters()).dtype
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 3, 6, 6, generator=gen).to(dtype), torch.randint(0, 7, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x).float(), y).backward()
        opt.step()


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in net.parameters()])


def trajectory(name: str, steps: int = 6, dtype=torch.float32, **path) -> torch.Tensor:
    net = make_net(dtype)
    train(net, OPTIMIZERS[name](net.parameters(), **path), range(steps))
    return flat(net)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_follows_the_per_tensor_path(name):
    per_tensor, fused = trajectory(name, foreach=False), trajectory(name, fused=True)
    assert (per_tensor - flat(make_net())).abs().max() > 1e-3  # the parameters moved
    torch.testing.assert_close(fused, per_tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["AggMo", "AdamP", "Expectigrad"])
def test_fused_resumes_from_state_dict(name):
    whole = trajectory(name, steps=8, fused=True)
    net = make_net()
    opt = OPTIMIZERS[name](net.parameters(), fused=True)
    train(net, opt, range(4))
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    resumed = make_net()
    resumed.load_state_dict(saved_net)
    opt = OPTIMIZERS[name](resumed.parameters(), fused=True)
    opt.load_state_dict(saved_opt)
    train(resumed, opt, range(4, 8))
    torch.testing.assert_close(flat(resumed), whole, rtol=1e-6, atol=1e-7)


def test_fused_bfloat16_parameters_keep_float32_state():
    per_tensor = trajectory("AdamP", dtype=torch.bfloat16, foreach=False)
    fused = trajectory("AdamP", dtype=torch.bfloat16, fused=True)
    torch.testing.assert_close(fused, per_tensor, rtol=1e-2, atol=1e-2)
    net = make_net(torch.bfloat16)
    opt = OPTIMIZERS["AdamP"](net.parameters(), fused=True)
    train(net, opt, range(1))
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())


def test_fused_is_the_cpu_default_where_compiling_pays_off():
    small = [torch.zeros(10)]
    large = [torch.zeros(_fused.MIN_ELEMENTS)]
    choose = _base.choose_path
    assert choose(small, None, None, has_fused=True) == "single"
    assert choose(large, None, None, has_fused=True) == "fused"  # no plan: size alone decides
    assert choose(large, None, None, has_fused=False) == "single"
    assert choose(large, False, None, has_fused=True) == "single"
    assert choose(large, True, None, has_fused=True) == "foreach"
    assert choose(large, None, False, has_fused=True) == "single"
    assert choose(small, None, True, has_fused=True) == "fused"
    # a planned run: compile only when the steps' savings repay the compilation
    assert choose(large, None, None, has_fused=True, expected_steps=10) == "single"
    assert choose(large, None, None, has_fused=True, expected_steps=100_000) == "fused"
    many_tensors = [torch.zeros(_fused.MIN_ELEMENTS // 64) for _ in range(64)]  # same size, 64x the compile time
    assert choose(many_tensors, None, None, has_fused=True, expected_steps=2_000) == "single"
    meta = [torch.zeros(_fused.MIN_ELEMENTS, device="meta")]
    assert choose(meta, None, None, has_fused=True) == "foreach"
    with pytest.raises(RuntimeError, match="CPU"):
        choose(meta, None, True, has_fused=True)


def test_plan_switches_a_large_model_between_eager_and_fused(monkeypatch):
    monkeypatch.setattr(_fused, "MIN_ELEMENTS", 100)  # the test net (about 700 elements) counts as large
    monkeypatch.setattr(_fused, "SAVED_SECONDS_PER_ELEMENT_STEP", 1e-6)
    chosen, choose = [], _base.choose_path
    monkeypatch.setattr(_base, "choose_path", lambda *a, **k: chosen.append(choose(*a, **k)) or chosen[-1])
    for steps, path in ((None, "fused"), (1, "single"), (10**6, "fused")):
        net = make_net()
        opt = OPTIMIZERS["AggMo"](net.parameters())
        opt.plan(steps)
        chosen.clear()
        train(net, opt, range(1))
        assert set(chosen) == {path}, (steps, chosen)


def test_fused_and_foreach_together_are_rejected():
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        AggMo([nn.Parameter(torch.zeros(2))], lr=0.1, foreach=True, fused=True)


def test_failed_compilation_warns_once_and_runs_the_same_math_eagerly(monkeypatch):
    expected = trajectory("SGDP", foreach=False)

    def broken_compile(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(_fused, "_failure", None)  # restored afterwards: other tests keep compiling
    monkeypatch.setattr(_fused, "_LOOPS", {})  # compile anew (with the broken compiler)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found.*OPTBENCH_FUSED=0"):
        fused = trajectory("SGDP", fused=True)
    assert not _fused.enabled()
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later steps: eager without a second warning
        trajectory("SGDP", fused=True)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_environment_switch_runs_the_kernels_eagerly(name, monkeypatch):
    """OPTBENCH_FUSED=0 (and the fallback after a failed compilation) run the kernel functions as plain eager
    code: they must be valid eager PyTorch too, with the same math."""
    monkeypatch.setenv("OPTBENCH_FUSED", "0")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled despite OPTBENCH_FUSED=0"))
    torch.testing.assert_close(trajectory(name, fused=True), trajectory(name, foreach=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["AggMo", "AdamP", "SGDP", "Expectigrad"])
def test_fused_with_two_groups_of_different_hyperparameters(name):
    """Each group compiles its own loop with its own constants and values."""
    group = {"AggMo": {"lr": 0.01, "weight_decay": 0.0}, "AdamP": {"lr": 0.003, "wd_ratio": 0.5},
             "SGDP": {"lr": 0.01, "momentum": 0.5}, "Expectigrad": {"beta": 0.0, "eps": 1e-3}}[name]
    results = []
    for path in (dict(foreach=False), dict(fused=True)):
        net = make_net()
        params = list(net.parameters())
        opt = OPTIMIZERS[name]([{"params": params[:2], **group}, {"params": params[2:]}], **path)
        train(net, opt, range(6))
        results.append(flat(net))
    assert (results[0] - flat(make_net())).abs().max() > 1e-3
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["AggMo", "AdamP", "Expectigrad"])
def test_fused_with_mixed_dtypes_in_one_group(name):
    """float64, float32 and bfloat16 tensors in one group: one compiled loop per (device, dtype) bucket."""
    results = []
    for path in (dict(foreach=False), dict(fused=True)):
        torch.manual_seed(0)
        params = [nn.Parameter(torch.randn(6, 4, dtype=dt)) for dt in (torch.float64, torch.float32, torch.bfloat16)]
        targets = [torch.randn(p.shape).to(p.dtype) for p in params]
        opt = OPTIMIZERS[name](params, **path)
        for _ in range(5):
            opt.zero_grad()
            sum(((p - t).double() ** 2).sum() for p, t in zip(params, targets)).backward()
            opt.step()
        results.append(params)
    for single, fused in zip(*results):
        assert single.dtype == fused.dtype
        torch.testing.assert_close(fused, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["AggMo", "AdamP", "SGDP", "Expectigrad"])
@pytest.mark.parametrize("first, second", [(dict(fused=True), dict(foreach=True)),
                                           (dict(foreach=True), dict(foreach=False)),
                                           (dict(foreach=False), dict(fused=True))])
def test_resume_on_another_path(name, first, second):
    """The state is the same on every path: a checkpoint written by one path resumes on another."""
    whole = trajectory(name, steps=8, foreach=False)
    net = make_net()
    opt = OPTIMIZERS[name](net.parameters(), **first)
    train(net, opt, range(4))
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    resumed = make_net()
    resumed.load_state_dict(saved_net)
    opt = OPTIMIZERS[name](resumed.parameters(), **second)
    opt.load_state_dict(saved_opt)
    train(resumed, opt, range(4, 8))
    torch.testing.assert_close(flat(resumed), whole, rtol=1e-5, atol=1e-6)
