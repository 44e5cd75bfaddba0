"""YellowFin: the cubic against numpy's roots, every per-step statistic against an independent float64
implementation of REFERENCE.md sec. 5, the parameters against an independent re-implementation of the official
PyTorch YellowFin (tests/yellowfin_reference.py) for 100 float64 steps, the tuner's properties (noiseless ->
momentum at its lower bound, noise -> above it, untuned convergence on the noisy quadratic), the measured total
momentum open and closed loop under staleness, and the optimizer contract (paths, no host sync, state, groups,
dtypes, skipped non-finite gradients, errors)."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from optbench.optim import YFOptimizer, build_optimizer
from optbench.optim.yellowfin import cubic_root
from optbench.staleness import DelayedGradients
from optbench.tasks.quadratic import NoisyQuadratic
from yellowfin_reference import OfficialYellowFin

EPS = 1e-6


# ----------------------------------------------------------------------------- the cubic
def numpy_root(D: float, C: float, h_min: float) -> float:
    """x = sqrt(mu): the real root in [0, 1] of d/dx [x^2 D^2 + (1 - x)^4 C / h^2] = 0, i.e. of
    (1 - x)^3 = p x with the reference's eps in p, from numpy's companion-matrix roots of a well-conditioned
    form: for p < 1 of s^3 + p s - p (s = 1 - x ~ p^(1/3)), for p >= 1 of y^3 - (3 + p) y^2 + 3 y - 1 (y = 1 / x,
    the largest root, ~ p)."""
    p = (D + EPS) ** 2 * (h_min + EPS) ** 2 / (2 * (C + EPS))
    if p < 1:
        roots = np.roots([1.0, 0.0, p, -p])
        return 1.0 - float(roots[np.argmin(np.abs(roots.imag))].real)
    roots = np.roots([1.0, -(3.0 + p), 3.0, -1.0])
    return 1.0 / float(roots[np.argmax(np.abs(roots))].real)


def test_cubic_root_matches_numpy_polynomial_roots_over_a_wide_grid():
    values = np.logspace(-6, 6, 13)
    grid = np.array(np.meshgrid(values, values, values, indexing="ij")).reshape(3, -1)
    D, C, h = (torch.tensor(v, dtype=torch.float64) for v in grid)
    ours = cubic_root(D, C, h).numpy()
    expected = np.array([numpy_root(*args) for args in grid.T])
    p = (grid[0] + EPS) ** 2 * (grid[2] + EPS) ** 2 / (2 * (grid[1] + EPS))
    assert p.min() < 1e-20 and p.max() > 1e20  # the grid spans both asymptotic regimes
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)
    # the root satisfies the cubic to rounding even where numpy cannot resolve it (x ~ 1 / p)
    residual = (1 - ours) ** 3 - p * ours
    assert np.all(np.abs(residual) <= 1e-12 * np.maximum(1.0, p * ours))


def test_cubic_root_agrees_with_the_reference_cardano_formula_where_that_is_accurate():
    """Up to the reference's guard eps in p / (3 (w + eps)), which moves its x by about eps."""
    D, C, h = (torch.tensor(v, dtype=torch.float64) for v in np.random.RandomState(0).uniform(0.1, 3, (3, 200)))
    p = (D + EPS) ** 2 * (h + EPS) ** 2 / (2 * (C + EPS))
    w3 = (-torch.sqrt(p**2 + 4 * p**3 / 27) - p) / 2
    w = torch.sign(w3) * w3.abs() ** (1 / 3)
    x_reference = w - p / (3 * (w + EPS)) + 1
    torch.testing.assert_close(cubic_root(D, C, h), x_reference, rtol=0, atol=2 * EPS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cubic_root_is_finite_and_in_unit_interval_for_all_positive_finite_inputs(dtype):
    extremes = [0.0, 1e-38, 1e-30, 1e-12, 1e-6, 1e-3, 1.0, 1e3, 1e6, 1e12, 1e30, 3e38]
    grid = torch.tensor(np.array(np.meshgrid(extremes, extremes, extremes)).reshape(3, -1), dtype=dtype)
    x = cubic_root(*grid)
    assert torch.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()
    if dtype == torch.float32:  # float32 agrees with float64 to float32 precision
        x64 = cubic_root(*grid.double())
        torch.testing.assert_close(x.double(), x64, rtol=2e-5, atol=1e-7)


# ----------------------------------------------------------------------------- independent float64 reference
class ReferenceYellowFin:
    """REFERENCE.md sec. 5 written out in numpy float64, one step at a time, the cubic solved by numpy's roots;
    gradients are arrays, clipping is clip_grad_norm_'s max_norm / (norm + 1e-6). The velocity exists from the
    first step with a non-zero momentum on, as torch.optim.SGD's buffer in the reference (step 7's quirk)."""

    def __init__(self, params, lr=1e-4, mu=0.0, clip_thresh=None, weight_decay=0.0, beta=0.999, width=20,
                 zero_debias=True, h_min_log_smooth=True, h_max_log_smooth=True, adapt_clip=True, lr_factor=1.0):
        self.p = [np.array(x, dtype=np.float64) for x in params]
        self.v = [np.zeros_like(x) for x in self.p]
        self.velocity_started = False
        self.gbar = [np.zeros_like(x) for x in self.p]
        self.lr0, self.mu0, self.clip_thresh, self.wd = lr, mu, clip_thresh, weight_decay
        self.beta, self.width = beta, width
        self.zero_debias, self.log_min, self.log_max = zero_debias, h_min_log_smooth, h_max_log_smooth
        self.adapt_clip, self.lr_factor = adapt_clip, lr_factor
        self.k = 0
        self.window = np.zeros(width)
        self.g2_avg = self.gnorm_avg = self.dist_avg = self.h_min_avg = self.h_max_avg = 0.0
        self.h_min = self.h_max = 0.0

    @staticmethod
    def _clip(grads, max_norm):
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        coef = min(1.0, max_norm / (norm + 1e-6))
        return [g * coef for g in grads]

    def step(self, grads):
        b, k = self.beta, self.k
        grads = [np.array(g, dtype=np.float64) for g in grads]
        if self.clip_thresh is not None:
            grads = self._clip(grads, self.clip_thresh)
        if self.adapt_clip and k > 1:
            grads = self._clip(grads, math.sqrt(100 * self.h_max) + EPS)
        g2 = sum(float((g * g).sum()) for g in grads)
        h_max_previous = self.h_max
        exploding = k >= 1 and g2 >= h_max_previous
        self.g2_avg = b * self.g2_avg + (1 - b) * g2
        self.window[k % self.width] = g2
        valid = self.window[: min(self.width, k + 1)]
        debias = 1 - b ** (k + 1) if self.zero_debias else 1.0
        lo = math.log(valid.min() + EPS) if self.log_min else valid.min()
        hi = math.log(valid.max() + EPS) if self.log_max else valid.max()
        self.h_min_avg = b * self.h_min_avg + (1 - b) * lo
        self.h_max_avg = b * self.h_max_avg + (1 - b) * hi
        self.h_min = math.exp(self.h_min_avg / debias) if self.log_min else self.h_min_avg / debias
        self.h_max = math.exp(self.h_max_avg / debias) if self.log_max else self.h_max_avg / debias
        self.gbar = [b * a + (1 - b) * g for a, g in zip(self.gbar, grads)]
        self.C = max(self.g2_avg / debias - sum(float((a * a).sum()) for a in self.gbar) / debias**2, EPS)
        self.gnorm_avg = b * self.gnorm_avg + (1 - b) * math.sqrt(g2)
        self.dist_avg = b * self.dist_avg + (1 - b) * self.gnorm_avg / (self.g2_avg + EPS)
        self.D = self.dist_avg / debias
        if k > 0:
            x = numpy_root(self.D, self.C, self.h_min)
            dr = max((self.h_max + EPS) / (self.h_min + EPS), 1 + EPS)
            self.mu = max(x * x, ((math.sqrt(dr) - 1) / (math.sqrt(dr) + 1)) ** 2)
            lr = (1 - math.sqrt(self.mu)) ** 2 / (self.h_min + EPS)
            self.lr = min(lr, lr * (k + 1) / (10 * self.width))
        else:
            self.lr, self.mu = self.lr0, self.mu0
        lr = self.lr * self.lr_factor
        if self.adapt_clip and lr * math.sqrt(g2) >= 100:
            lr = 100 / math.sqrt(g2 + EPS)
        if exploding and self.adapt_clip:
            grads = self._clip(grads, math.sqrt(h_max_previous) + EPS)
        keep = self.mu if self.velocity_started else 0.0
        for i, g in enumerate(grads):
            self.v[i] = keep * self.v[i] + g + self.wd * self.p[i]
            self.p[i] = self.p[i] - lr * self.v[i]
        self.velocity_started = self.velocity_started or self.mu != 0
        self.applied_lr = lr
        self.k += 1


def stochastic_gradients(params, k: int, noise: float, scale: float):
    """A noisy quadratic's gradient h * x + noise, with a burst every 37 steps (exercises the clips)."""
    rng = np.random.RandomState(k)
    grads = []
    for i, x in enumerate(params):
        h = np.logspace(0, 2, x.size).reshape(x.shape) * (i + 1)
        grads.append(h * x + noise * rng.randn(*x.shape) * (30.0 if k % 37 == 36 else 1.0))
    return [g * scale for g in grads]


REFERENCE_CASES = {
    "defaults": {},
    "clip_decay_factor": {"clip_thresh": 5.0, "weight_decay": 1e-2, "lr_factor": 0.5, "mu": 0.3, "lr": 1e-3},
    "plain_smoothing_no_debias": {"h_min_log_smooth": False, "h_max_log_smooth": False, "zero_debias": False,
                                  "beta": 0.99, "curv_win_width": 7},
    "no_adapt_clip": {"adapt_clip": False, "beta": 0.9},
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_every_statistic_matches_an_independent_float64_recomputation_for_100_steps(case):
    kwargs = REFERENCE_CASES[case]
    rng = np.random.RandomState(1)
    init = [rng.randn(3, 4), rng.randn(5)]
    params = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    opt = YFOptimizer(params, log_stats=True, **kwargs)
    ref_kwargs = {("width" if k == "curv_win_width" else k): v for k, v in kwargs.items()}
    ref = ReferenceYellowFin(init, **ref_kwargs)
    scale = 0.2 if case == "no_adapt_clip" else 1.0
    for k in range(100):
        grads = stochastic_gradients(ref.p, k, noise=0.5, scale=scale)
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        opt.step()
        ref.step(grads)
        stats = opt.extras()
        for name, expected in (("h_min", ref.h_min), ("h_max", ref.h_max), ("C", ref.C), ("D", ref.D),
                               ("mu", ref.mu)):
            assert float(stats[name]) == pytest.approx(expected, rel=1e-7, abs=1e-12), (k, name)
        assert float(opt.param_groups[0]["lr"]) == pytest.approx(ref.applied_lr, rel=1e-7), k
        assert float(opt.param_groups[0]["momentum"]) == pytest.approx(ref.mu, rel=1e-7, abs=1e-12), k
        for p, expected in zip(params, ref.p):
            np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-7, atol=1e-10)
    assert float(stats["skipped"]) == 0


# ----------------------------------------------------------------------------- the tuner's properties
def run_quadratic(steps: int, noise: float, seed: int = 0, dim: int = 10, init_scale: float = 0.3, **kwargs):
    task = NoisyQuadratic("q", dim, 1.0, 1000.0, noise, steps, 1, init_scale, torch.device("cpu"))
    opt = YFOptimizer(task.model.parameters(), log_stats=True, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for batch in task.train_batches(generator):
        opt.zero_grad()
        task.loss(batch)[0].backward()
        opt.step()
        history.append({name: float(v) for name, v in opt.extras().items()} | {"lr": float(opt.param_groups[0]["lr"])})
    return task, history


def lower_bound(h_min: float, h_max: float) -> float:
    sqrt_dr = math.sqrt(max((h_max + EPS) / (h_min + EPS), 1 + EPS))
    return ((sqrt_dr - 1) / (sqrt_dr + 1)) ** 2


def test_noiseless_problem_gives_the_momentum_lower_bound_and_its_lr():
    _, history = run_quadratic(100, noise=0.0)
    for k, s in enumerate(history[1:], start=1):
        bound = lower_bound(s["h_min"], s["h_max"])
        assert s["mu"] == pytest.approx(bound, rel=1e-5), k
        lr = (1 - math.sqrt(s["mu"])) ** 2 / (s["h_min"] + EPS)
        assert s["lr"] == pytest.approx(min(lr, lr * (k + 1) / 200), rel=1e-5), k
    assert history[-1]["mu"] > 1e-4  # a real curvature range, not the trivial bound 0


def test_large_gradient_noise_raises_momentum_above_the_bound():
    _, history = run_quadratic(300, noise=10.0)
    for s in history[100:]:
        assert s["mu"] > 1.2 * lower_bound(s["h_min"], s["h_max"])


def test_untuned_yellowfin_reduces_the_noisy_quadratic_loss_100_fold():
    task = NoisyQuadratic("q", 10, 1.0, 1000.0, 0.1, 1, 1, 0.3, torch.device("cpu"))
    initial = float(task.objective().detach())
    task, history = run_quadratic(1200, noise=0.1)
    assert initial / float(task.objective().detach()) >= 100
    assert history[-1]["skipped"] == 0


# ----------------------------------------------------------------------------- closed loop under staleness
def measured_momentum(x_next, x, x_prev, fresh_grad, lr, lr_prev) -> float:
    """REFERENCE.md's estimator on the iterates, per unit of lr (as YFOptimizer reports it)."""
    ratio = (x_next - x + lr * fresh_grad) / (x - x_prev) * (lr_prev / lr)
    return float(torch.nanmedian(ratio))


def run_stale(steps: int, tau: int, **kwargs):
    """YellowFin under staleness tau on a noiseless quadratic (curvatures 1..10, 50 coordinates, so the median
    over coordinates is steady); returns per update the total momentum measured on the iterates, the mu_hat
    YellowFin reports, and the tuner's target mu."""
    task = NoisyQuadratic("q", 50, 1.0, 10.0, 0.0, steps, 1, 1.0, torch.device("cpu"))
    x = task.model.x
    opt = YFOptimizer([x], **kwargs)
    delay = DelayedGradients([x], tau)
    opt.attach_gradient_delay(delay)
    generator = torch.Generator().manual_seed(0)
    iterates, lrs, fresh, measured, reported, target = [x.detach().clone()], [], [], [], [], []
    for batch in task.train_batches(generator):
        opt.zero_grad()
        task.loss(batch)[0].backward()
        fresh_grad = x.grad.detach().clone()
        if not delay.push():
            continue
        opt.step()
        iterates.append(x.detach().clone())
        lrs.append(float(opt.param_groups[0]["lr"]))
        fresh.append(fresh_grad)
        extras = opt.extras()
        target.append(float(extras["mu"]))
        reported.append(float(extras.get("mu_hat", math.nan)))
        if len(iterates) >= 3:
            measured.append(measured_momentum(iterates[-1], iterates[-2], iterates[-3], fresh[-1], lrs[-1], lrs[-2]))
    return np.array(measured), np.array(reported[1:]), np.array(target[1:])


def test_closed_loop_yellowfin_steers_the_measured_total_momentum_to_the_tuners_target():
    tau, steps, tail = 7, 600, slice(300, None)
    open_measured, open_reported, open_target = run_stale(steps, tau)
    closed_measured, closed_reported, closed_target = run_stale(steps, tau, closed_loop=True)
    # asynchrony adds momentum: without feedback the measured total momentum sits above the target, and open
    # loop reports that measurement as mu_hat (the paper's measured-vs-algorithmic momentum figure)
    open_gap = np.median(open_measured[tail] - open_target[tail])
    assert open_gap > 0.015
    np.testing.assert_allclose(open_reported[50:], open_measured[50:], atol=1e-4)
    # closed loop: its mu_hat is the estimator on the iterates (once the early clipping of the gradient, which
    # YellowFin applies to the fresh gradient as well, is over), and the feedback removes the gap
    np.testing.assert_allclose(closed_reported[50:], closed_measured[50:], atol=1e-4)
    closed_gap = np.median(closed_measured[tail] - closed_target[tail])
    assert abs(closed_gap) < 0.2 * open_gap
    assert closed_target[-1] > 0.4  # a real momentum target, not a trivial one


def test_open_loop_mu_hat_is_the_applied_momentum_without_asynchrony():
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases, delta_mu=0.05)
    train(opt, weights + biases, 0, 10)
    extras = opt.extras()
    assert float(extras["mu_hat"]) == pytest.approx(float(extras["mu"]) + 0.05, rel=1e-6)
    assert all(float(g["momentum"]) == pytest.approx(float(extras["mu"]) + 0.05, rel=1e-6) for g in opt.param_groups)


# ----------------------------------------------------------------------------- the official implementation
def conv_bn_net() -> torch.nn.Module:
    """Float64 conv + BatchNorm net. Smooth (tanh): a ReLU's kink turns the two runs' 1e-6 differences (the
    reference's float32 statistics) into O(1) gradient jumps whenever an input crosses it."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, bias=False), torch.nn.BatchNorm2d(6), torch.nn.Tanh(),
        torch.nn.Conv2d(6, 8, 3, stride=2, bias=False), torch.nn.BatchNorm2d(8), torch.nn.Tanh(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 5)).double()


def conv_bn_batch(k: int):
    g = torch.Generator().manual_seed(100 + k)
    return torch.randn(16, 3, 9, 9, generator=g, dtype=torch.float64), torch.randint(0, 5, (16,), generator=g)


def embedding_net() -> torch.nn.Module:
    """A (dense) word embedding: the rows of the tokens a batch lacks get exactly zero gradients (sparsity)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(80, 6), torch.nn.Flatten(), torch.nn.Tanh(),
                               torch.nn.Linear(4 * 6, 5)).double()


def embedding_batch(k: int):
    g = torch.Generator().manual_seed(100 + k)
    return torch.randint(0, 80, (16, 4), generator=g), torch.randint(0, 5, (16,), generator=g)


def side_by_side(kwargs: dict, steps: int = 100, lr_factors: dict | None = None, model=conv_bn_net,
                 batch=conv_bn_batch, **ours_kwargs):
    """YFOptimizer and the official implementation on two copies of one net, fed the same batches; returns
    the largest relative difference ||p_ours - p_official|| / ||p_official|| over tensors and steps, and the
    oracle (its ``events`` say which clips and guards acted)."""
    ours_net, official_net = model(), model()
    ours = YFOptimizer(ours_net.parameters(), **kwargs, **ours_kwargs)
    official = OfficialYellowFin(list(official_net.parameters()), **kwargs)
    worst = 0.0
    for k in range(steps):
        if k in (lr_factors or {}):
            ours.set_lr_factor(lr_factors[k])
            official.set_lr_factor(lr_factors[k])
        x, y = batch(k)
        for net, opt in ((ours_net, ours), (official_net, official)):
            net.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            worst = max([worst] + [float((a - b).norm() / b.norm())
                                   for a, b in zip(ours_net.parameters(), official_net.parameters())])
    return worst, official


# name: (constructor kwargs, {step: lr_factor}, the oracle's events that must have happened)
OFFICIAL_CASES = {
    "defaults": ({}, None, ("exploding",)),
    "clip_thresh_always": ({"clip_thresh": 0.5}, None, ("clip_thresh",)),
    "clip_thresh_sometimes": ({"clip_thresh": 2.0}, None, ("clip_thresh",)),
    "lr_factor_changed_mid_run": ({}, {40: 0.3, 70: 1.5}, ("exploding",)),
    "stat_protect_catastrophic_weight_decay": (
        {"stat_protect_fac": 0.8, "catastrophic_move_thresh": 0.03, "weight_decay": 1e-2}, {50: 0.5},
        ("stat_protect", "catastrophic_move")),
    "auto_clip_fac": ({"auto_clip_fac": 0.9}, None, ("auto_clip",)),
    "force_non_inc_step": ({"force_non_inc_step": True, "beta": 0.9, "curv_win_width": 5}, {60: 0.5},
                           ("lr_bound",)),
    "first_momentum_plain_smoothing": ({"mu": 0.5, "lr": 1e-2, "beta": 0.9, "curv_win_width": 5,
                                        "zero_debias": False, "h_max_log_smooth": False}, None, ()),
}


@pytest.mark.parametrize("case", list(OFFICIAL_CASES))
def test_parameters_follow_the_official_implementation_for_100_float64_steps(case):
    kwargs, lr_factors, events = OFFICIAL_CASES[case]
    worst, official = side_by_side(kwargs, lr_factors=lr_factors)
    assert worst < 1e-4, worst
    assert all(official.events[e] > 0 for e in events), official.events


@pytest.mark.parametrize("foreach", [False, True])
def test_sparsity_debias_follows_the_official_implementation_on_an_embedding(foreach):
    worst, official = side_by_side({"sparsity_debias": True}, model=embedding_net, batch=embedding_batch,
                                   foreach=foreach)
    assert worst < 1e-4, worst
    assert 0.3 < official.sparsity < 0.9  # a sparse gradient: the debiasing acts


def test_official_multi_tensor_path_follows_too():
    worst, _ = side_by_side({"clip_thresh": 2.0}, lr_factors={40: 0.3}, foreach=True)
    assert worst < 1e-4, worst


def test_velocity_starts_at_the_second_step_as_its_gradient_alone():
    """The reference's torch.optim.SGD has no momentum buffer while momentum is 0 (the first step): after two
    steps the velocity is the second step's gradient, not mu g_0 + g_1."""
    (p,) = params = [torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))]
    opt = YFOptimizer(params)
    for k, g in enumerate(([0.5, 1.0, -1.0], [0.25, -0.5, 0.75])):  # no clip acts
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert float(opt.param_groups[0]["momentum"]) > 0 or k == 0
    torch.testing.assert_close(opt.momentum_buffer(p), p.grad, rtol=1e-12, atol=0)
    assert float(opt.tuner["started"]) == 1.0


# ----------------------------------------------------------------------------- contract
def small_problem(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.nn.Parameter(torch.randn(6, 5, generator=g).to(dtype)),
               torch.nn.Parameter(torch.randn(7, generator=g).to(dtype))]
    biases = [torch.nn.Parameter(torch.randn(3, generator=g).to(dtype))]
    return weights, biases


def quadratic_loss(params, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + k)
    total = 0.0
    for i, p in enumerate(params):
        h = torch.linspace(1.0, 20.0 * (i + 1), p.numel()).reshape(p.shape)
        noise = torch.randn(p.shape, generator=g)
        total = total + (0.5 * h * p.float() ** 2 + 0.3 * noise * p.float()).sum()
    return total


def train(opt, params, start: int, steps: int) -> None:
    for k in range(start, start + steps):
        opt.zero_grad()
        quadratic_loss(params, k).backward()
        opt.step()


def make_optimizer(weights, biases, **kwargs) -> YFOptimizer:
    return YFOptimizer([{"params": weights, "weight_decay": 1e-2},
                        {"params": biases, "lr_factor": 0.5}], log_stats=True, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("closed_loop", [False, True])
def test_foreach_and_per_tensor_paths_agree(dtype, closed_loop):
    results = []
    for foreach in (False, True):
        weights, biases = small_problem(dtype)
        opt = make_optimizer(weights, biases, foreach=foreach, closed_loop=closed_loop, clip_thresh=50.0)
        train(opt, weights + biases, 0, 40)
        results.append((weights + biases, opt))
    assert_same_run(results[0], results[1], rtol=1e-6, atol=1e-7, tuner_atol=1e-9)


def assert_same_run(reference, other, rtol: float, atol: float, tuner_atol: float) -> None:
    """Two (params, optimizer) runs agree: parameters, and every tuner statistic. C = g2_avg - ||gbar||^2
    cancels: its float32 rounding is relative to g2_avg, and the per-tensor form gets ||gbar||^2 from the
    expansion (1-w)^2 A.A + 2w(1-w) A.g + w^2 g.g instead of reading gbar again."""
    (p_ref, opt_ref), (p_other, opt_other) = reference, other
    for a, b in zip(p_ref, p_other):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    for name in opt_ref.tuner:
        name_atol = 1e-5 * float(opt_ref.tuner["g2_avg"]) if name == "C" else tuner_atol
        torch.testing.assert_close(opt_ref.tuner[name], opt_other.tuner[name], rtol=rtol, atol=name_atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


# the reference's other options, on together
REFERENCE_OPTIONS = dict(sparsity_debias=True, force_non_inc_step=True, delta_mu=0.05, auto_clip_fac=2.0,
                         stat_protect_fac=10.0, catastrophic_move_thresh=1.0, curv_win_width=3)


def test_paths_agree_with_the_reference_options():
    results = []
    for path in (dict(foreach=False), dict(foreach=True), dict(fused=True)):
        weights, biases = small_problem()
        opt = make_optimizer(weights, biases, **REFERENCE_OPTIONS, **path)
        train(opt, weights + biases, 0, 30)
        results.append((weights + biases, opt))
    opt_single = results[0][1]
    assert float(opt_single.tuner["lr_bound"]) < math.inf and float(opt_single.tuner["sparsity_avg"]) > 0
    for other in results[1:]:
        assert_same_run(results[0], other, rtol=1e-5, atol=1e-6, tuner_atol=1e-8)


def test_bfloat16_parameters_follow_the_float32_trajectory():
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        weights, biases = small_problem(dtype)
        opt = make_optimizer(weights, biases)
        train(opt, weights + biases, 0, 60)
        runs[dtype] = (weights + biases, opt)
        if dtype == torch.bfloat16:
            assert all(opt.state[p]["scaled_grad_avg"].dtype == torch.float32 for p in weights + biases)
    for a, b in zip(runs[torch.float32][0], runs[torch.bfloat16][0]):
        torch.testing.assert_close(b.float(), a, rtol=0.05, atol=0.02)
    mu32, mu16 = (float(runs[d][1].extras()["mu"]) for d in (torch.float32, torch.bfloat16))
    assert mu16 == pytest.approx(mu32, rel=0.1, abs=1e-3)


@pytest.mark.parametrize("options", [{}, {"closed_loop": True}, REFERENCE_OPTIONS],
                         ids=["open_loop", "closed_loop", "reference_options"])
def test_state_dict_round_trip_resumes_the_same_trajectory(options):
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases, **options)
    train(opt, weights + biases, 0, 25)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in weights + biases], "opt": opt.state_dict()}, buffer)
    train(opt, weights + biases, 25, 25)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    weights2, biases2 = small_problem(seed=5)
    with torch.no_grad():
        for p, value in zip(weights2 + biases2, saved["params"]):
            p.copy_(value)
    resumed = make_optimizer(weights2, biases2, **options)
    resumed.load_state_dict(saved["opt"])
    train(resumed, weights2 + biases2, 25, 25)
    for a, b in zip(weights + biases, weights2 + biases2):
        assert torch.equal(a, b)
    for name in opt.tuner:
        assert torch.equal(opt.tuner[name], resumed.tuner[name]), name


def test_a_checkpoint_from_before_the_velocity_flag_resumes_with_a_started_velocity():
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases)
    train(opt, weights + biases, 0, 3)
    state = copy.deepcopy(opt.state_dict())
    del state["tuner"]["started"]
    resumed = make_optimizer(weights, biases)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.tuner["started"], torch.ones(()))


def test_bfloat16_state_survives_a_round_trip_in_float32():
    weights, biases = small_problem(torch.bfloat16)
    opt = make_optimizer(weights, biases)
    train(opt, weights + biases, 0, 5)
    resumed = make_optimizer(weights, biases)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p in weights + biases:
        for key in ("scaled_grad_avg", "scaled_velocity"):
            assert resumed.state[p][key].dtype == torch.float32
            assert torch.equal(resumed.state[p][key], opt.state[p][key])


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_gradient_is_skipped_counted_and_not_applied(bad, foreach):
    reference_w, reference_b = small_problem()
    reference = make_optimizer(reference_w, reference_b, foreach=foreach)
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases, foreach=foreach)
    train(reference, reference_w + reference_b, 0, 10)
    train(opt, weights + biases, 0, 10)
    before = [p.detach().clone() for p in weights + biases]
    tuner_before = dict(opt.tuner)
    opt.zero_grad()
    quadratic_loss(weights + biases, 10).backward()
    weights[0].grad[2, 3] = bad
    grads = [p.grad.clone() for p in weights + biases]
    opt.step()
    # the step reads the bad gradient as 0 and never writes .grad
    assert all(torch.allclose(p.grad, g, rtol=0, atol=0, equal_nan=True) for p, g in zip(weights + biases, grads))
    for p, b in zip(weights + biases, before):
        assert torch.equal(p.detach(), b)
    assert float(opt.extras()["skipped"]) == 1
    for name, value in tuner_before.items():
        if name != "skipped":
            assert torch.equal(opt.tuner[name], value), name
    # the skipped step changed nothing: the runs go on identically
    train(reference, reference_w + reference_b, 11, 10)
    train(opt, weights + biases, 11, 10)
    for a, b in zip(reference_w + reference_b, weights + biases):
        assert torch.equal(a, b)


class HostSyncCounter(TorchDispatchMode):
    """Counts the operators that read a device value on the host (a synchronisation on CUDA)."""

    SYNCING = ("aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.nonzero",
               "aten.masked_select", "aten._assert_async")

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket).startswith(self.SYNCING) or "_local_scalar_dense" in str(func):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def test_host_sync_counter_sees_a_host_read():
    with HostSyncCounter() as counter:
        float(torch.ones(()) * 2)
    assert counter.syncs


@pytest.mark.parametrize("options", [dict(closed_loop=True, clip_thresh=10.0), REFERENCE_OPTIONS],
                         ids=["closed_loop", "reference_options"])
@pytest.mark.parametrize("foreach", [False, True])
def test_step_never_reads_a_device_value_on_the_host(foreach, options):
    weights, biases = small_problem()
    params = weights + biases
    opt = make_optimizer(weights, biases, foreach=foreach, **options)
    delay = DelayedGradients(params, 2)
    opt.attach_gradient_delay(delay)
    counter = HostSyncCounter()
    for k in range(8):
        opt.zero_grad()
        quadratic_loss(params, k).backward()
        if delay.push():
            with counter:
                opt.step()
                opt.extras()
    assert counter.syncs == []


def test_groups_get_the_tuned_lr_times_their_factor_and_schedules_scale_it():
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases)
    train(opt, weights + biases, 0, 30)
    lr_w, lr_b = (float(g["lr"]) for g in opt.param_groups)
    assert lr_b == pytest.approx(0.5 * lr_w, rel=1e-6)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(float(opt.tuner["lr"]), rel=1e-6)
    assert all(torch.equal(g["momentum"], opt.tuner["mu"]) for g in opt.param_groups)
    opt.set_lr_factor(0.1)
    assert [g["lr_factor"] for g in opt.param_groups] == pytest.approx([0.1, 0.05])
    train(opt, weights + biases, 30, 1)
    lr_w, lr_b = (float(g["lr"]) for g in opt.param_groups)
    assert lr_w == pytest.approx(0.1 * float(opt.tuner["lr"]), rel=1e-6)
    assert lr_b == pytest.approx(0.05 * float(opt.tuner["lr"]), rel=1e-6)


def test_an_applied_step_leaves_the_gradients_bit_for_bit_unchanged():
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases, clip_thresh=1.0)  # clipping scales the update, not .grad
    train(opt, weights + biases, 0, 3)
    opt.zero_grad()
    quadratic_loss(weights + biases, 3).backward()
    grads = [p.grad.clone() for p in weights + biases]
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(weights + biases, grads))


def test_extras_names_before_and_after_the_first_step():
    weights, biases = small_problem()
    plain = YFOptimizer(weights + biases)
    assert plain.extras() == {"mu": 0.0, "mu_hat": 0.0, "mu_gap": 0.0}
    full = make_optimizer(weights, biases, closed_loop=True)
    names = ["mu", "mu_alg", "mu_hat", "h_min", "h_max", "C", "D", "skipped", "mu_gap", "mu_lower_bound",
             "mu_over_lower_bound"]
    assert list(full.extras()) == names
    train(full, weights + biases, 0, 2)
    extras = full.extras()
    assert list(extras) == names and all(torch.is_tensor(v) and v.dim() == 0 for v in extras.values())
    assert float(extras["mu_gap"]) == float(extras["mu_hat"] - extras["mu"])
    h_ratio = math.sqrt(float(extras["h_max"]) / float(extras["h_min"]))
    assert float(extras["mu_lower_bound"]) == pytest.approx(((h_ratio - 1) / (h_ratio + 1)) ** 2, rel=1e-4)
    assert float(extras["mu_over_lower_bound"]) == pytest.approx(float(extras["mu"] / extras["mu_lower_bound"]))


def test_closure_is_evaluated_and_params_without_grad_are_skipped():
    weights, biases = small_problem()
    frozen = torch.nn.Parameter(torch.ones(4))
    opt = YFOptimizer(weights + biases + [frozen])

    def closure():
        opt.zero_grad()
        loss = quadratic_loss(weights + biases, 0)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in weights + biases]
    loss = opt.step(closure)
    assert float(loss.detach()) == pytest.approx(float(quadratic_loss(before, 0)))
    assert all(not torch.equal(p.detach(), b) for p, b in zip(weights + biases, before))
    assert torch.equal(frozen.detach(), torch.ones(4)) and frozen not in opt.state


def test_a_parameter_that_stops_getting_gradients_keeps_its_averages():
    """The averages are stored as a shared scale times a tensor; a parameter left out of a step must not
    follow the scale's change."""
    weights, biases = small_problem()
    opt = make_optimizer(weights, biases)
    train(opt, weights + biases, 0, 10)
    frozen = biases[0]
    velocity, grad_avg, value = opt.momentum_buffer(frozen), opt.grad_avg(frozen), frozen.detach().clone()
    for k in range(10, 15):
        opt.zero_grad()
        quadratic_loss(weights, k).backward()
        opt.step()
    assert frozen.grad is None and torch.equal(frozen.detach(), value)
    torch.testing.assert_close(opt.momentum_buffer(frozen), velocity, rtol=1e-6, atol=0)
    torch.testing.assert_close(opt.grad_avg(frozen), grad_avg, rtol=1e-6, atol=0)
    assert not torch.equal(opt.tuner["velocity_scale"], torch.ones(()))


def test_sparse_gradients_are_a_clear_error():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = YFOptimizer(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="YFOptimizer does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.0}, "lr must be"), ({"lr": math.nan}, "lr must be"), ({"mu": 1.0}, r"mu must be in \[0, 1\)"),
    ({"clip_thresh": -1.0}, "clip_thresh must be"), ({"weight_decay": -1e-4}, "weight_decay must be"),
    ({"beta": 1.0}, r"beta must be in \[0, 1\)"), ({"curv_win_width": 0}, "curv_win_width must be an integer"),
    ({"curv_win_width": 2.5}, "curv_win_width must be an integer"), ({"lr_factor": -1.0}, "lr_factor must be"),
    ({"feedback_gain": -0.1}, "feedback_gain must be"), ({"stat_protect_fac": 0.0}, "stat_protect_fac must be"),
    ({"catastrophic_move_thresh": -1.0}, "catastrophic_move_thresh must be"),
    ({"auto_clip_fac": 0.0}, "auto_clip_fac must be"), ({"delta_mu": 1.0}, r"delta_mu must be a number in \(-1, 1\)"),
    ({"delta_mu": "0.1"}, "delta_mu must be"), ({"sparsity_debias": 1}, "sparsity_debias must be True or False"),
    ({"force_non_inc_step": "yes"}, "force_non_inc_step must be True or False"),
])
def test_invalid_arguments_name_themselves_and_their_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        YFOptimizer([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_the_configs_build_yellowfin():
    from conftest import compose

    for name, closed in (("yellowfin", False), ("yellowfin_closed_loop", True)):
        cfg = compose(f"optim={name}", "task=noisy_quadratic")
        optim_cfg = dict(cfg["optim"])
        optim_cfg["weight_decay"] = cfg["task"]["weight_decay"]
        opt = build_optimizer([torch.nn.Parameter(torch.ones(2))], optim_cfg)
        assert isinstance(opt, YFOptimizer) and opt._cfg["closed_loop"] is closed


@pytest.mark.parametrize("closed_loop", [False, True])
def test_fused_and_per_tensor_paths_agree_through_a_skipped_step(closed_loop):
    """The fused CPU kernels (optim/_fused.py) follow the per-tensor path, including a non-finite gradient."""
    results = []
    for path in (dict(foreach=False), dict(fused=True)):
        weights, biases = small_problem()
        opt = make_optimizer(weights, biases, closed_loop=closed_loop, clip_thresh=50.0, **path)
        train(opt, weights + biases, 0, 20)
        opt.zero_grad()
        quadratic_loss(weights + biases, 20).backward()
        weights[0].grad[1, 2] = math.nan
        opt.step()
        assert all(torch.isfinite(s).all() for state in opt.state.values() for s in state.values())
        train(opt, weights + biases, 21, 20)
        results.append((weights + biases, opt))
    (p_single, opt_single), (p_fused, opt_fused) = results
    assert float(opt_fused.extras()["skipped"]) == 1
    for a, b in zip(p_single, p_fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for name in opt_single.tuner:
        # C = g2_avg - ||gbar||^2 cancels: its float32 rounding is relative to g2_avg, and the fused kernels sum
        # the squares in another order
        atol = 1e-5 * float(opt_single.tuner["g2_avg"]) if name == "C" else 1e-8
        torch.testing.assert_close(opt_single.tuner[name], opt_fused.tuner[name], rtol=1e-5, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_fused_kernels_run_eagerly_with_the_environment_switch(monkeypatch):
    monkeypatch.setenv("OPTBENCH_FUSED", "0")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled despite OPTBENCH_FUSED=0"))
    results = []
    for path in (dict(foreach=False), dict(fused=True)):
        weights, biases = small_problem()
        opt = make_optimizer(weights, biases, clip_thresh=50.0, **path)
        train(opt, weights + biases, 0, 20)
        results.append(weights + biases)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
