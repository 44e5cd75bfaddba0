"""Presets as the papers ran them: the composed values each paper (or its reference code) states."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from optbench.optim import build_optimizer
from optbench.run_config import optimizer_config


def composed(*overrides: str) -> dict:
    return OmegaConf.to_container(compose(*overrides), resolve=True)


def test_expectigrad_alternating_quadratic_is_the_reference_test_problem():
    cfg = composed("experiment=expectigrad/alt_quadratic", "optim=expectigrad")
    task = cfg["task"]
    assert (task["kind"], task["x0"], task["epochs"] * task["steps_per_epoch"]) == ("alt_quadratic", [1.0, 1.0], 1000)
    assert cfg["optim"]["sparse_counter"] is True and cfg["trainer"]["log_every"] == 1


@pytest.mark.parametrize("optim, torch_class, settings", [
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-3, alpha=0.99, eps=1e-8)),
    ("adagrad", torch.optim.Adagrad, dict(lr=1e-2, eps=1e-10, initial_accumulator_value=0.0)),
])
def test_expectigrad_baselines_are_torchs_optimizers_with_the_stated_settings(optim, torch_class, settings):
    cfg = composed("task=alt_quadratic", f"optim={optim}")
    ours = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    theirs = torch.nn.Parameter(ours.detach().clone())
    a, b = build_optimizer([ours], optimizer_config(cfg)), torch_class([theirs], **settings)
    for step in range(5):
        for p, opt in ((ours, a), (theirs, b)):
            opt.zero_grad()
            (p ** 2 * torch.tensor([3.0, 1.0 + step], dtype=torch.float64)).sum().backward()
            opt.step()
    assert type(a) is torch_class and torch.equal(ours, theirs)


@pytest.mark.parametrize("override, message", [
    ("optim.alpha=1.5", "alpha"), ("optim.eps=0", "eps"), ("optim.lr=-1", "lr")])
def test_baseline_settings_out_of_range_are_rejected(override, message):
    cfg = composed("task=alt_quadratic", "optim=rmsprop", override)
    with pytest.raises(ValueError, match=message):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], optimizer_config(cfg))


@pytest.mark.parametrize("preset, epochs", [("mnist_logreg", 20), ("mnist_logreg_runsh", 10), ("mnist_mlp", 100),
                                            ("cifar10_vgg", 200)])
def test_hypergrad_presets_train_on_the_whole_training_set_and_validate_on_test(preset, epochs):
    """As the reference's train.py: 60,000 MNIST images at batch 128 are 469 iterations an epoch (not 422 with a
    held-out tenth); the epoch budgets are the variants report's (run.sh: logreg 10)."""
    from optbench.data.batches import num_batches, split_train_val

    task = composed(f"experiment=hypergrad/{preset}", "optim=sgd_hd")["task"]
    assert (task["val_fraction"], task["val_split"], task["epochs"], task["weight_decay"]) == (0.0, "test", epochs,
                                                                                              1e-4)
    fit, _ = split_train_val(60000 if "mnist" in preset else 50000, task["val_fraction"])
    assert num_batches(fit.stop, task["batch_size"]) == (469 if "mnist" in preset else 391)


def test_validating_on_test_uses_the_test_set_and_the_whole_training_set(mini_data_dir):
    from optbench.tasks import build_task

    cfg = composed("experiment=hypergrad/mnist_logreg", "optim=sgd")["task"]
    task = build_task(cfg, str(mini_data_dir), torch.device("cpu"))
    assert len(task.splits["train"][1]) == 200 and task.splits["val"][1] is task.splits["test"][1]
    with pytest.raises(ValueError, match="task.val_fraction must be 0"):
        build_task({**cfg, "val_fraction": 0.1}, str(mini_data_dir), torch.device("cpu"))


@pytest.mark.parametrize("overrides, message", [
    (["task.val_split=test"], "task.val_fraction must be 0"),
    (["task.val_split=train"], "task.val_split='train' is not known; valid: held_out, test")])
def test_a_bad_validation_split_is_a_config_error_before_any_data_is_read(overrides, message):
    from optbench.checks import check_run
    from optbench.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        check_run(composed("task=digits_mlp", "optim=sgd", *overrides))


def _heavy_ball(betas, lr, curvatures, steps, start=(1.0, 1.0)):
    """AggMo's update in float64 (classical momentum is K = 1): v_i = beta_i v_i - g; x += lr / K sum_i v_i."""
    h, x = np.array(curvatures), np.array(start)
    v = np.zeros((len(betas), 2))
    for _ in range(steps):
        v = np.array(betas)[:, None] * v - (h * x)[None, :]
        x = x + lr / len(betas) * v.sum(0)
    return 0.5 * float((h * x * x).sum())


@pytest.mark.parametrize("overrides, betas", [(["optim=momentum"], [0.9]),
                                              (["optim=momentum", "optim.momentum=0.99"], [0.99]),
                                              (["optim=aggmo"], [0.0, 0.9, 0.99])])
def test_the_2d_quadratic_ends_where_the_closed_form_iteration_does(tmp_path, overrides, betas):
    """AggMo's damping picture: CM 0.99 oscillates (about 5e-2 left after 150 steps), CM 0.9 crawls (1e-4),
    AggMo [0, 0.9, 0.99] reaches 7e-8; the trainer's numbers are the float64 iteration's."""
    from optbench.results import read_log
    from optbench.train import run

    cfg = composed("experiment=aggmo/quadratic_2d", *overrides, f"results_dir={tmp_path}", "device=cpu")
    task = cfg["task"]
    expected = _heavy_ball(betas, cfg["optim"]["lr"], task["curvatures"], task["epochs"])
    final = read_log(run(cfg) / "metrics.csv").iloc[-1]
    assert final["val_loss"] == pytest.approx(expected, rel=1e-3)
    assert {"x0", "x1"} <= set(final.index)
