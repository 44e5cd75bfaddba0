"""Hypergrad (hypergradient descent and its variants): every model optimizer x learning-rate optimizer against
an independent float64 implementation of REFERENCE.md sec. 3, the special cases that are torch's SGD and Adam,
the paper's claims on a quadratic, and the optimizer contract (paths, state, groups, dtypes, errors)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from optbench.optim import AdamHD, Hypergrad, SGDHD, build_optimizer

COMBINATIONS = [(m, lo) for m in ("sgd", "sgdn", "adam") for lo in ("sgd", "sgdn", "adam")]
WEIGHT_DECAY = 1e-3

# model optimizer -> (alpha_0, momentum); lr optimizer -> beta, smaller for Adam's normalised directions
ALPHA_0 = {"sgd": 0.03, "sgdn": 0.02, "adam": 0.01}
BETA = {("sgd", "sgd"): 3e-3, ("sgd", "sgdn"): 1e-3, ("sgd", "adam"): 5e-4,
        ("sgdn", "sgd"): 2e-3, ("sgdn", "sgdn"): 5e-4, ("sgdn", "adam"): 5e-4,
        ("adam", "sgd"): 1e-3, ("adam", "sgdn"): 3e-4, ("adam", "adam"): 5e-4}


# ----------------------------------------------------------------------------- a small problem
def make_model(dtype=torch.float64, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)


def make_batches(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(4, 16, 5, generator=g, dtype=torch.float64)
    ys = torch.randn(4, 16, 3, generator=g, dtype=torch.float64)
    return xs.to(dtype), ys.to(dtype)


def batch_loss(model: nn.Module, batches, k: int) -> torch.Tensor:
    xs, ys = batches
    return ((model(xs[k % 4]) - ys[k % 4]) ** 2).mean()


def grouped_params(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with weight decay, biases without (the dot product must span both)."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]


def train(model, opt, batches, steps: int) -> list[float]:
    alphas = []
    for k in range(steps):
        opt.zero_grad()
        batch_loss(model, batches, k).backward()
        opt.step()
        alphas.append(float(opt.param_groups[0]["lr"]))
    return alphas


def flat(model: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().double().reshape(-1).numpy() for p in model.parameters()])


class FlatProblem:
    """The same model as a function of one flat float64 vector: gradients come from autograd, everything
    else in the reference below is numpy."""

    def __init__(self, model: nn.Module, batches, decayed: set[str]):
        self.model, self.batches = model, batches
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.sizes = [p.numel() for _, p in model.named_parameters()]
        self.decay_mask = np.concatenate([np.full(s, 1.0 if n in decayed else 0.0)
                                          for n, s in zip(self.names, self.sizes)])

    def grad(self, x: np.ndarray, k: int) -> np.ndarray:
        chunks = torch.from_numpy(x).split(self.sizes)
        params = {n: c.reshape(s).clone().requires_grad_(True) for n, c, s in zip(self.names, chunks, self.shapes)}
        xs, ys = self.batches
        out = torch.func.functional_call(self.model, params, (xs[k % 4],))
        loss = ((out - ys[k % 4]) ** 2).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        return np.concatenate([g.reshape(-1).numpy() for g in grads])


def reference_run(problem: FlatProblem, x0: np.ndarray, model_opt: str, lr_opt: str, steps: int, lr: float,
                  beta: float, weight_decay: float, momentum=0.9, betas=(0.9, 0.999), eps=1e-8,
                  lr_momentum=0.9, lr_betas=(0.9, 0.999), lr_eps=1e-8):
    """REFERENCE.md sec. 3 written out in float64 on the flattened parameter vector."""
    x, alpha = x0.copy(), lr
    d_prev = np.zeros_like(x)
    buf, m, v = None, np.zeros_like(x), np.zeros_like(x)
    h_buf = h_m = h_v = 0.0
    alphas = []
    for t in range(1, steps + 1):
        g = problem.grad(x, t - 1) + weight_decay * problem.decay_mask * x
        h = -math.fsum(float(gi) * float(di) for gi, di in zip(g, d_prev))  # h_1 = 0: d_0 = 0
        if lr_opt == "sgd":
            alpha = alpha - beta * h
        elif lr_opt == "sgdn":
            h_buf = lr_momentum * h_buf + h
            alpha = alpha - beta * (h + lr_momentum * h_buf)
        else:  # adam; t counts step 1 (h_1 = 0)
            b1, b2 = lr_betas
            h_m = b1 * h_m + (1 - b1) * h
            h_v = b2 * h_v + (1 - b2) * h * h
            alpha = alpha - beta * math.sqrt(1 - b2**t) / (1 - b1**t) * h_m / (math.sqrt(h_v) + lr_eps)
        if model_opt == "sgd":
            d = g
        elif model_opt == "sgdn":
            buf = g.copy() if buf is None else momentum * buf + g
            d = g + momentum * buf
        elif model_opt == "sgdm":  # classical momentum, the reference SGDHD(momentum > 0): d_t is the buffer
            buf = g.copy() if buf is None else momentum * buf + g
            d = buf
        else:
            b1, b2 = betas
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            d = m / (np.sqrt(v) + eps) * math.sqrt(1 - b2**t) / (1 - b1**t)
        x = x - alpha * d
        d_prev = d
        alphas.append(alpha)
    return x, np.array(alphas)


# ----------------------------------------------------------------------------- the formulas
@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "per_tensor_path"])
@pytest.mark.parametrize("model_opt,lr_opt", COMBINATIONS)
def test_matches_float64_reference_of_the_formulas(model_opt, lr_opt, foreach):
    model, batches = make_model(), make_batches()
    lr, beta = ALPHA_0[model_opt], BETA[(model_opt, lr_opt)]
    problem = FlatProblem(model, batches, decayed={n for n, _ in model.named_parameters() if n.endswith("weight")})
    x_ref, alphas_ref = reference_run(problem, flat(model), model_opt, lr_opt, 50, lr, beta, WEIGHT_DECAY)
    assert np.max(np.abs(alphas_ref / lr - 1)) > 0.1, "the test problem must move alpha"

    opt = Hypergrad(grouped_params(model, WEIGHT_DECAY), lr=lr, hypergrad_lr=beta, model_opt=model_opt,
                    lr_opt=lr_opt, momentum=0.9, foreach=foreach)
    alphas = train(model, opt, batches, 50)
    np.testing.assert_allclose(alphas, alphas_ref, rtol=1e-8, atol=0)
    np.testing.assert_allclose(flat(model), x_ref, rtol=1e-8, atol=1e-12)


def reference_adam_hd_per_tensor(problem: FlatProblem, x0, steps, lr, beta, betas=(0.9, 0.999), eps=1e-8):
    """The reference Adam-HD code's order: inside the loop over tensors, alpha += beta * h_i with tensor i's
    own hypergradient, then tensor i moves with that alpha."""
    b1, b2 = betas
    x = [c.copy() for c in np.split(x0, np.cumsum(problem.sizes)[:-1])]
    m = [np.zeros_like(c) for c in x]
    v = [np.zeros_like(c) for c in x]
    alpha, alphas = lr, []
    for t in range(1, steps + 1):
        g = np.split(problem.grad(np.concatenate(x), t - 1), np.cumsum(problem.sizes)[:-1])
        for i in range(len(x)):
            if t > 1:
                h = float(np.dot(g[i], m[i] / (np.sqrt(v[i]) + eps))) * math.sqrt(1 - b2 ** (t - 1)) / (1 - b1 ** (t - 1))
                alpha += beta * h
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            x[i] = x[i] - alpha * math.sqrt(1 - b2**t) / (1 - b1**t) * m[i] / (np.sqrt(v[i]) + eps)
        alphas.append(alpha)
    return np.concatenate(x), np.array(alphas)


def test_per_tensor_mode_reproduces_the_reference_adam_hd_loop():
    model, batches = make_model(), make_batches()
    problem = FlatProblem(model, batches, decayed=set())
    x_ref, alphas_ref = reference_adam_hd_per_tensor(problem, flat(model), 30, lr=0.01, beta=1e-3)
    global_model = make_model()
    alphas_global = train(global_model, AdamHD(global_model.parameters(), lr=0.01, hypergrad_lr=1e-3), batches, 30)

    opt = AdamHD(model.parameters(), lr=0.01, hypergrad_lr=1e-3, per_tensor=True)
    alphas = train(model, opt, batches, 30)
    np.testing.assert_allclose(alphas, alphas_ref, rtol=1e-8, atol=0)
    np.testing.assert_allclose(flat(model), x_ref, rtol=1e-8, atol=1e-12)
    assert abs(alphas_global[-1] - alphas[-1]) > 1e-4, "the compatibility mode must differ from the paper's math"


@pytest.mark.parametrize("momentum,nesterov,dampening", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0),
                                                          (0.8, False, 0.3)])
def test_sgdhd_with_zero_hypergrad_lr_is_torch_sgd(momentum, nesterov, dampening):
    batches = make_batches()
    ours, theirs = make_model(), make_model()
    kwargs = dict(lr=0.05, momentum=momentum, nesterov=nesterov, dampening=dampening, weight_decay=1e-3)
    alphas = train(ours, SGDHD(ours.parameters(), hypergrad_lr=0.0, **kwargs), batches, 30)
    train(theirs, torch.optim.SGD(theirs.parameters(), **kwargs), batches, 30)
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-12, atol=1e-15)
    assert alphas == [0.05] * 30


def test_adamhd_with_zero_hypergrad_lr_is_torch_adam():
    batches = make_batches()
    ours, theirs = make_model(), make_model()
    kwargs = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-12, weight_decay=1e-3)
    train(ours, AdamHD(ours.parameters(), hypergrad_lr=0.0, **kwargs), batches, 50)
    train(theirs, torch.optim.Adam(theirs.parameters(), **kwargs), batches, 50)
    start = flat(make_model())
    assert np.max(np.abs(flat(theirs) - start)) > 0.1  # the parameters moved
    np.testing.assert_allclose(flat(ours), flat(theirs), rtol=1e-6, atol=1e-9)


def test_hypergradient_is_minus_the_dot_product_of_consecutive_directions():
    """Step 2 of SGD-HD by hand: h_2 = -g_2 . g_1 over both groups, alpha_2 = alpha_0 - beta h_2."""
    model, batches = make_model(), make_batches()
    opt = Hypergrad(grouped_params(model, 0.0), lr=0.01, hypergrad_lr=0.1)
    grads = []
    for k in range(2):
        opt.zero_grad()
        batch_loss(model, batches, k).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        opt.step()
        if k == 0:
            assert float(opt.extras()["hypergrad"]) == 0.0 and float(opt.param_groups[0]["lr"]) == 0.01
    h = -float(grads[1] @ grads[0])
    assert float(opt.extras()["hypergrad"]) == pytest.approx(h, rel=1e-12)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01 - 0.1 * h, rel=1e-12)


# ----------------------------------------------------------------------------- the paper's claims
def quadratic_run(opt_factory, steps: int):
    scales = torch.linspace(1.0, 10.0, 10, dtype=torch.float64)
    x = torch.ones(10, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([x])
    f0 = float(0.5 * (scales * x.detach() ** 2).sum())
    alphas = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (scales * x**2).sum()).backward()
        opt.step()
        alphas.append(float(opt.param_groups[0]["lr"]))
    return float(0.5 * (scales * x.detach() ** 2).sum()) / f0, alphas


def test_sgdhd_raises_a_far_too_small_alpha_by_orders_of_magnitude_and_converges():
    rel_loss, alphas = quadratic_run(lambda p: SGDHD(p, lr=1e-6, hypergrad_lr=1e-4), 300)
    assert max(alphas) > 1e-2  # four orders of magnitude above alpha_0 (stable below 2 / 10 here)
    assert rel_loss < 1e-20
    sgd_rel_loss, _ = quadratic_run(lambda p: torch.optim.SGD(p, lr=1e-6), 300)
    assert sgd_rel_loss > 0.99  # plain SGD with that alpha has not moved


@pytest.mark.parametrize("model_opt", ["sgd", "sgdn", "adam"])
def test_starting_from_alpha_zero_works(model_opt):
    beta = 1e-3 if model_opt == "adam" else 1e-4
    rel_loss, alphas = quadratic_run(lambda p: Hypergrad(p, lr=0.0, hypergrad_lr=beta, model_opt=model_opt), 300)
    assert alphas[0] == 0.0 and alphas[1] > 0.0  # step 1 cannot move alpha (h_1 = 0); step 2 does
    assert rel_loss < 1e-12


def test_alpha_may_go_negative_unless_lr_min_clamps_it():
    def run(lr_min):
        x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        opt = SGDHD([x], lr=0.15, hypergrad_lr=2.0, lr_min=lr_min)
        alphas = []
        for _ in range(10):
            opt.zero_grad()
            (5.0 * x**2).sum().backward()
            opt.step()
            alphas.append(float(opt.param_groups[0]["lr"]))
        return alphas

    assert min(run(None)) < 0.0
    clamped = run(0.0)
    assert min(clamped) == 0.0


# ----------------------------------------------------------------------------- the optimizer contract
@pytest.mark.parametrize("model_opt", ["sgd", "sgdm", "sgdn", "adam"])
@pytest.mark.parametrize("lr_opt", ["sgd", "sgdn", "adam"])
def test_multi_tensor_and_per_tensor_paths_agree_exactly(model_opt, lr_opt):
    batches = make_batches(torch.float32)
    results = []
    for foreach in (True, False):
        model = make_model(torch.float32)
        opt = Hypergrad(grouped_params(model, 1e-2), lr=0.02, hypergrad_lr=1e-3, model_opt=model_opt,
                        lr_opt=lr_opt, foreach=foreach)
        alphas = train(model, opt, batches, 20)
        results.append((flat(model), alphas))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("model_opt,lr_opt", [("adam", "adam"), ("sgdn", "sgdn"), ("sgd", "sgd")])
def test_state_dict_round_trip_resumes_the_same_trajectory(model_opt, lr_opt, dtype):
    batches = make_batches(dtype)

    def build(model):
        return Hypergrad(model.parameters(), lr=0.02, hypergrad_lr=1e-3, model_opt=model_opt, lr_opt=lr_opt,
                         weight_decay=1e-3)

    model = make_model(dtype)
    opt = build(model)
    train(model, opt, batches, 4)
    opt.set_lr_factor(0.5)
    train(model, opt, batches, 2)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    continued = train(model, opt, batches, 6)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = make_model(dtype, seed=7)
    resumed_model.load_state_dict(saved["model"])
    resumed_opt = build(resumed_model)
    resumed_opt.load_state_dict(saved["optim"])
    if dtype == torch.bfloat16:
        assert all(v.dtype == torch.float32 for s in resumed_opt.state.values() for v in s.values()
                   if torch.is_tensor(v))
    resumed = train(resumed_model, resumed_opt, batches, 6)
    assert resumed == continued
    np.testing.assert_array_equal(flat(resumed_model), flat(model))
    assert torch.equal(resumed_opt.extras()["hypergrad"], opt.extras()["hypergrad"])


def test_set_lr_factor_scales_the_learned_alpha_instead_of_overwriting_it():
    model, batches = make_model(), make_batches()
    opt = Hypergrad(model.parameters(), lr=0.02, hypergrad_lr=3e-3)
    train(model, opt, batches, 10)
    learned = float(opt.param_groups[0]["lr"])
    assert learned != pytest.approx(0.02, rel=1e-3)
    opt.set_lr_factor(1.0)
    assert float(opt.param_groups[0]["lr"]) == learned
    opt.set_lr_factor(0.1)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.1 * learned, rel=1e-12)
    opt.set_lr_factor(0.01)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01 * learned, rel=1e-12)
    with pytest.raises(ValueError, match="factor"):
        opt.set_lr_factor(0.0)


def test_alpha_is_one_device_tensor_shared_by_all_groups():
    model, batches = make_model(torch.float32), make_batches(torch.float32)
    opt = Hypergrad(grouped_params(model, 1e-3), lr=0.02, hypergrad_lr=1e-3, model_opt="adam")
    train(model, opt, batches, 3)
    lrs = [g["lr"] for g in opt.param_groups]
    assert all(lr is lrs[0] for lr in lrs)
    assert isinstance(lrs[0], torch.Tensor) and lrs[0].dim() == 0 and lrs[0].dtype == torch.float64
    # a float written by a user (or a torch scheduler) is picked up, and becomes the shared tensor again
    opt.param_groups[0]["lr"] = 0.005
    opt.zero_grad()
    batch_loss(model, batches, 3).backward()
    opt.step()
    h = float(opt.extras()["hypergrad"])
    assert float(opt.param_groups[1]["lr"]) == pytest.approx(0.005 - 1e-3 * h, rel=1e-12)


def test_added_param_group_shares_the_current_alpha():
    model = make_model()
    extra = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Hypergrad(model.parameters(), lr=0.02, hypergrad_lr=1e-3)
    train(model, opt, make_batches(), 3)
    opt.add_param_group({"params": [extra]})
    assert opt.param_groups[-1]["lr"] is opt.param_groups[0]["lr"]


def test_params_without_grad_are_skipped_and_closure_is_evaluated():
    model, batches = make_model(), make_batches()
    unused = nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = Hypergrad([*model.parameters(), unused], lr=0.02, hypergrad_lr=1e-3, model_opt="adam")

    def closure():
        opt.zero_grad()
        loss = batch_loss(model, batches, 0)
        loss.backward()
        return loss

    for _ in range(3):
        loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.grad_fn is not None  # evaluated with grad enabled
    assert torch.equal(unused.detach(), torch.ones(4, dtype=torch.float64))
    assert len(opt.state[unused]) == 0


def test_step_with_no_gradients_changes_nothing():
    model = make_model()
    opt = Hypergrad(model.parameters(), lr=0.02, hypergrad_lr=1e-3)
    before = flat(model)
    opt.step()
    np.testing.assert_array_equal(flat(model), before)
    assert float(opt.param_groups[0]["lr"]) == 0.02


def test_sparse_gradients_are_a_clear_error():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = Hypergrad(emb.parameters(), lr=0.01, hypergrad_lr=1e-3)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_bfloat16_parameters_train_with_float32_state_close_to_float32():
    batches32 = make_batches(torch.float32)
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = make_model(dtype)
        opt = Hypergrad(model.parameters(), lr=0.01, hypergrad_lr=1e-3, model_opt="adam", lr_opt="adam")
        batches = tuple(b.to(dtype) for b in batches32)
        first = float(batch_loss(model, batches, 0).detach())
        alphas = train(model, opt, batches, 40)
        last = float(batch_loss(model, batches, 0).detach())
        runs[dtype] = (first, last, alphas, model, opt)
    first, last, alphas, model, opt = runs[torch.bfloat16]
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())
    assert last < 0.9 * first
    assert alphas[-1] == pytest.approx(runs[torch.float32][2][-1], rel=0.05)


def test_alpha_zero_learns_a_positive_learning_rate():
    """The paper's point: alpha_0 = 0 works. The first step cannot move (alpha_1 = alpha_0 - beta * h_1 with
    h_1 = 0); after it the hypergradient raises alpha and the loss falls."""
    model, batches = make_model(), make_batches()

    def mean_loss() -> float:
        return sum(float(batch_loss(model, batches, k).detach()) for k in range(4)) / 4

    start, first_loss = flat(model), mean_loss()
    opt = Hypergrad(model.parameters(), lr=0.0, hypergrad_lr=3e-3)
    alphas = train(model, opt, batches, 1)
    assert alphas == [0.0]
    np.testing.assert_array_equal(flat(model), start)
    alphas = train(model, opt, batches, 60)
    assert alphas[10] > 1e-3 and alphas[-1] > alphas[10]
    assert mean_loss() < 0.9 * first_loss


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "per_tensor_path"])
def test_sgd_hd_with_classical_momentum_matches_the_reference(foreach):
    """SGDHD(momentum > 0, nesterov=False) is the reference SGDHD's momentum branch: h_t = -g_t . buf_{t-1},
    then p -= alpha_t buf_t, with a hypergradient lr large enough to move alpha."""
    model, batches = make_model(), make_batches()
    problem = FlatProblem(model, batches, decayed={n for n, _ in model.named_parameters()})
    lr, beta = 0.02, 2e-3
    x_ref, alphas_ref = reference_run(problem, flat(model), "sgdm", "sgd", 40, lr, beta, WEIGHT_DECAY)
    assert np.max(np.abs(alphas_ref / lr - 1)) > 0.1, "the test problem must move alpha"
    opt = SGDHD(model.parameters(), lr=lr, momentum=0.9, weight_decay=WEIGHT_DECAY, hypergrad_lr=beta,
                foreach=foreach)
    alphas = train(model, opt, batches, 40)
    np.testing.assert_allclose(alphas, alphas_ref, rtol=1e-8, atol=0)
    np.testing.assert_allclose(flat(model), x_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kwargs,name", [
    (dict(lr=-1e-3), "lr"),
    (dict(lr=math.nan), "lr"),
    (dict(hypergrad_lr=-1.0), "hypergrad_lr"),
    (dict(model_opt="sgdn", momentum=1.0), "momentum"),
    (dict(model_opt="sgdm", dampening=-0.1), "dampening"),
    (dict(model_opt="sgdn", dampening=0.1), "dampening must be 0 for Nesterov"),
    (dict(model_opt="adam", betas=(0.9, 1.0)), r"betas\[1\]"),
    (dict(model_opt="adam", eps=0.0), "eps"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(lr_opt="sgdn", lr_momentum=-0.1), "lr_momentum"),
    (dict(lr_opt="adam", lr_betas=(1.5, 0.999)), r"lr_betas\[0\]"),
    (dict(lr_opt="adam", lr_eps=0.0), "lr_eps"),
    (dict(model_opt="rmsprop"), "model_opt must be one of 'sgd', 'sgdm', 'sgdn', 'adam'"),
    (dict(lr_opt="lbfgs"), "lr_opt must be one of 'sgd', 'sgdn', 'adam'"),
    (dict(lr_min=0.1), "lr_min"),
    (dict(model_opt="sgd", per_tensor=True), "per_tensor"),
])
def test_invalid_arguments_are_rejected_with_the_argument_named(kwargs, name):
    args = dict(lr=1e-3, hypergrad_lr=1e-3) | kwargs
    with pytest.raises(ValueError, match=name):
        Hypergrad(make_model().parameters(), **args)


def test_invalid_group_settings_are_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="shared by all parameter groups"):
        Hypergrad([{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters()}],
                  lr=1e-3, hypergrad_lr=1e-3)
    with pytest.raises(ValueError, match="momentum"):
        Hypergrad([{"params": model.parameters(), "momentum": 2.0}], lr=1e-3, hypergrad_lr=1e-3, model_opt="sgdn")
    with pytest.raises(ValueError, match="nesterov"):
        SGDHD(model.parameters(), lr=1e-3, nesterov=True)


# ----------------------------------------------------------------------------- configs and trainer
CONFIGS = {
    "sgd_hd": ("sgd", "sgd", 1e-3), "sgdn_hd": ("sgdn", "sgd", 1e-3), "adam_hd": ("adam", "sgd", 1e-7),
    "sgdop_sgdnlop": ("sgd", "sgdn", 1e-3), "sgdnop_sgdnlop": ("sgdn", "sgdn", 1e-3),
    "adamop_adamlop": ("adam", "adam", 1e-7), "sgdop_adamlop": ("sgd", "adam", 1e-3),
    "sgdnop_adamlop": ("sgdn", "adam", 1e-3), "adamop_sgdnlop": ("adam", "sgdn", 1e-7),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_config_builds_its_combination(name):
    from conftest import compose
    from optbench.train import optimizer_config

    cfg = compose(f"optim={name}", "task=mnist_mlp")
    opt = build_optimizer(make_model().parameters(), optimizer_config(cfg))
    model_opt, lr_opt, beta = CONFIGS[name]
    assert isinstance(opt, Hypergrad) and cfg.optim.name == name
    assert (opt.model_opt, opt.lr_opt, opt.hypergrad_lr) == (model_opt, lr_opt, beta)
    assert float(opt.param_groups[0]["lr"]) == 1e-3
    assert opt.param_groups[0]["weight_decay"] == 1e-4  # the task's (the paper's 1e-4)
    if model_opt == "sgdn":
        assert opt.param_groups[0]["momentum"] == 0.9


def test_trainer_logs_alpha_per_step_and_per_epoch_and_scales_it_by_the_schedule(tmp_path, mini_data_dir):
    import csv

    from conftest import compose
    from optbench.train import run

    cfg = compose("task=digits_logreg", "optim=sgd_hd", "optim.lr=0.01", "task.epochs=2", "task.batch_size=256",
                  f"results_dir={tmp_path}", f"data_dir={mini_data_dir}", "device=cpu", "trainer.log_every=1",
                  "optim.lr_schedule.name=step", "optim.lr_schedule.milestones=[1]",
                  "optim.lr_schedule.lr_decay=0.5")
    run_dir = run(cfg)
    with open(run_dir / "steps.csv", newline="") as f:
        steps = list(csv.DictReader(f))
    with open(run_dir / "metrics.csv", newline="") as f:
        metrics = list(csv.DictReader(f))
    lrs = [float(r["lr"]) for r in steps]
    assert len(set(lrs)) == len(lrs) and "hypergrad" in steps[0]
    epoch1 = [r for r in steps if r["epoch"] == "1"]
    epoch2 = [r for r in steps if r["epoch"] == "2"]
    assert float(metrics[1]["lr"]) == pytest.approx(np.mean([float(r["lr"]) for r in epoch1]), rel=1e-6)
    # epoch 2 starts from half the learned alpha, then takes its first hypergradient step
    first = epoch2[0]
    expected = 0.5 * float(epoch1[-1]["lr"]) - 1e-3 * float(first["hypergrad"])
    assert float(first["lr"]) == pytest.approx(expected, rel=1e-9)
