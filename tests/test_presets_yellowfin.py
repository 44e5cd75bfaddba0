"""YellowFin's presets as the official code ran them (JianGoForIt/YellowFin: cifar/scripts/CIFAR10-release.py,
CIFAR100-release.py, ptb/scripts/PTB-release.py, char-rnn-tensorflow/train_YF.py; JianGoForIt/YellowFin_Pytorch:
pytorch-cifar/main.py, word_language_model/main.py): the composed values the papers and scripts state, the
schedules reproduced epoch by epoch against the scripts' own rules, and the measured-vs-algorithmic momentum
figure drawn from runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose
from optbench.checks import check_run
from optbench.data.batches import num_batches
from optbench.schedules import Schedule, lr_factor


def composed(*overrides: str) -> dict:
    cfg = OmegaConf.to_container(compose(*overrides), resolve=True)
    check_run(cfg)
    return cfg


@pytest.mark.parametrize("preset, model, steps, classes", [
    ("cifar10", "resnet110", 40001, 10),                    # the paper's model, the release script's budget
    ("cifar10_tf_resnet", "resnet_tf", 40001, 10),          # the release script's model too
    ("cifar100", "resnet164", 150001, 100),
    ("cifar100_tf_resnet", "resnet_tf_bottleneck", 150001, 100),
])
@pytest.mark.parametrize("optim", ["yellowfin", "adam", "momentum"])
def test_cifar_presets_run_the_release_scripts_iterations(preset, model, steps, classes, optim):
    """num_step = 40001 (CIFAR-10) / 150001 (CIFAR-100) updates at batch_size_train = 128, weight_decay_rate
    0.0002, one constant learning rate, on the whole training set (data_batch* / train.bin) with the test set
    evaluated."""
    cfg = composed(f"experiment=yellowfin/{preset}", f"optim={optim}")
    task = cfg["task"]
    assert (task["model"], task["max_steps"], task["batch_size"]) == (model, steps, 128)
    assert task["weight_decay"] == cfg["optim"]["weight_decay"] == 2e-4
    assert (task["val_fraction"], task["val_split"]) == (0.0, "test")
    assert task["dataset"] == f"cifar{classes}" and task["augment"] == "crop_flip"
    schedule = cfg["optim"]["lr_schedule"]
    assert schedule["name"] == "constant"
    per_epoch = num_batches(50000, task["batch_size"])  # 391 iterations an epoch on all 50,000 images
    epochs = math.ceil(steps / per_epoch)
    assert {lr_factor(schedule, e, epochs) for e in range(1, epochs + 1)} == {1.0}


def test_ptb_tf_preset_is_the_tensorflow_small_model_without_clipping():
    """PTB-release.py: SmallConfig (2 layers of 200, no dropout, init_scale 0.1, num_steps 20, batch_size 20),
    num_step = 2323 * 13, no clipping (threshold 1e10; YellowFin applies the raw gradients), constant lr."""
    task = composed("experiment=yellowfin/ptb_tf", "optim=yellowfin")["task"]
    kwargs = task["model_kwargs"]
    assert (task["name"], task["model"]) == ("ptb_lstm_small", "lstm_lm")
    assert (kwargs["layers"], kwargs["hidden"], kwargs["embed_dim"], kwargs["dropout"]) == (2, 200, 200, 0.0)
    assert kwargs["tie_weights"] is False and kwargs["init_lstm_uniform"] is True and kwargs.get(
        "init_range", 0.1) == 0.1
    assert (task["bptt"], task["batch_size"], task["epochs"]) == (20, 20, 13)
    tf_epoch_size = ((929_589 // 20) - 1) // 20  # PTBInput.epoch_size on PTB's 929,589 training tokens
    assert tf_epoch_size == 2323 and task["max_steps"] == 2323 * 13 == 30199
    assert task["grad_clip"] is None and task["weight_decay"] == 0.0 and task["lr_schedule"]["name"] == "constant"


def test_ptb_tied_decay_divides_the_lr_factor_by_4_whenever_validation_does_not_improve():
    """word_language_model/main.py (README: --emsize 650 --nhid 650 --dropout 0.5 --epochs 40 --tied): after each
    epoch, val_loss < best_val_loss keeps the factor, anything else divides it by 4. The composed plateau rule
    gives the same factors as that loop on a made-up validation sequence with ties and rebounds."""
    cfg = composed("experiment=yellowfin/ptb_tied_decay", "optim=yellowfin")
    task, schedule = cfg["task"], cfg["optim"]["lr_schedule"]
    kwargs = task["model_kwargs"]
    assert (kwargs["embed_dim"], kwargs["hidden"], kwargs["dropout"], kwargs["tie_weights"]) == (650, 650, 0.5, True)
    assert (task["bptt"], task["batch_size"], task["grad_clip"], task["epochs"]) == (35, 20, 1.0, 40)
    assert (schedule["name"], schedule["factor"], schedule["patience"], schedule["threshold"]) == (
        "plateau", 0.25, 0, 0.0)
    val_losses = [5.0, 4.8, 4.8, 4.9, 4.7, 4.7000001, 4.69, 4.75, 4.6]
    ours, theirs = Schedule(schedule, epochs=40, steps=1), []
    best, factor = None, 1.0
    for epoch, val_loss in enumerate(val_losses, start=1):
        ours.end_epoch({"val_loss": val_loss})
        if not best or val_loss < best:  # main.py's rule
            best = val_loss
        else:
            factor /= 4.0
        theirs.append(factor)
        assert ours.factor(epoch + 1, 0) == pytest.approx(factor)
    assert theirs[-1] == 4.0 ** -4


def test_cifar10_resnext_decay_divides_by_10_from_epoch_151_counted_from_0():
    """pytorch-cifar/main.py: ResNeXt29_2x64d, batch 128, weight decay 5e-4, 200 epochs (range(0, 200)), and
    `if epoch == 151: set_lr_factor(get_lr_factor() / 10.0)` at the start of epoch 151 (0-based)."""
    cfg = composed("experiment=yellowfin/cifar10_resnext_decay", "optim=yellowfin")
    task, schedule = cfg["task"], cfg["optim"]["lr_schedule"]
    assert (task["model"], task["batch_size"], task["epochs"], task["max_steps"]) == ("resnext29_2x64d", 128, 200,
                                                                                      None)
    assert cfg["optim"]["weight_decay"] == 5e-4 and (task["val_fraction"], task["val_split"]) == (0.0, "test")
    theirs, factor = [], 1.0
    for epoch in range(200):  # main.py's loop
        if epoch == 151:
            factor /= 10.0
        theirs.append(factor)
    assert [lr_factor(schedule, e, 200) for e in range(1, 201)] == pytest.approx(theirs)


def test_tinyshakespeare_decays_the_lr_factor_by_097_per_epoch():
    """char-rnn-tensorflow/train_YF.py: lr_factor = decay_rate ** e (0.97, e from 0), batch 50, seq 50, 2 x 128,
    clip 5, 50 epochs."""
    cfg = composed("experiment=yellowfin/tinyshakespeare_char", "optim=yellowfin")
    task, schedule = cfg["task"], cfg["optim"]["lr_schedule"]
    assert (task["batch_size"], task["bptt"], task["model_kwargs"]["hidden"], task["model_kwargs"]["layers"],
            task["grad_clip"], task["epochs"]) == (50, 50, 128, 2, 5.0, 50)
    assert [lr_factor(schedule, e, 50) for e in range(1, 51)] == pytest.approx([0.97 ** e for e in range(50)])


def test_quick_stand_in_keeps_its_epochs():
    """scripts/yellowfin.sh QUICK=1 runs the CIFAR-10 preset on the digits: its budget in iterations is off."""
    overrides = ("experiment=yellowfin/cifar10", "task=digits_mlp", "task.model=mlp", "optim=yellowfin",
                 "task.epochs=2", "task.max_steps=null", "trainer.log_every=2")
    task = composed(*overrides)["task"]
    assert (task["name"], task["model"], task["epochs"], task["max_steps"]) == ("digits_mlp", "mlp", 2, None)
    from conftest import REPO

    assert "task.max_steps=null" in (REPO / "scripts" / "yellowfin.sh").read_text()


# ------------------------------------------------------------------ the measured vs algorithmic momentum figure
def _momentum_runs(root):
    from test_plot_rundirs import classification_rows, write_run

    for staleness, optims in ((0, ("yellowfin",)), (15, ("yellowfin", "yellowfin_closed_loop"))):
        for optim in optims:
            steps = []
            for s in range(2, 41, 2):
                mu = 0.5 + 0.005 * s
                row = {"step": s, "epoch": 1 + (s - 1) // 10, "loss": 1.0, "lr": 0.1, "mu": mu,
                       "mu_hat": mu + (0.1 * staleness / 15) * (1 if optim == "yellowfin" else 0.0)}
                if optim == "yellowfin_closed_loop":
                    row["mu_alg"] = mu - 0.1
                steps.append(row)
            write_run(root, "digits_mlp", optim, 0, classification_rows(0), steps,
                      variant="default" if staleness == 0 else "trainer.staleness=15",
                      config={"trainer.staleness": staleness})


def test_momentum_figure_draws_mu_hat_beside_mu_sync_open_and_closed_loop(tmp_path):
    from test_plot_figures import _grid

    from optbench.plot.figures import draw_figure
    from optbench.plot.runs import load_runs
    from optbench.plot.specs import load_figure_spec

    _momentum_runs(tmp_path)
    spec = load_figure_spec("yellowfin")
    fig = draw_figure(spec, next(f for f in spec.figures if f.name == "momentum"), load_runs(tmp_path))
    axes = _grid(fig, 3, 4)
    steps = np.arange(2, 41, 2)
    mu = 0.5 + 0.005 * steps
    moving = np.array([mu[max(0, i - 9): i + 1].mean() for i in range(len(mu))])  # smooth: 10 logged points
    expected = {0: (["measured", "target"], [moving, moving]),          # synchronous: mu_hat = mu
                1: (["measured", "target"], [moving + 0.1, moving]),    # open loop: asynchrony adds momentum
                2: (["measured", "target", "algorithmic"], [moving, moving, moving - 0.1])}  # closed: mu_alg lower
    for row, (first_words, curves) in expected.items():
        lines = axes[row, 0].get_lines()
        assert [line.get_label().split(" ")[0] for line in lines] == first_words
        for line, y in zip(lines, curves):
            np.testing.assert_allclose(line.get_xdata(), steps)
            np.testing.assert_allclose(line.get_ydata(), y)
    assert axes[0, 0].get_title() == "digits_mlp" and axes[2, 0].get_ylabel() == "16 async workers, closed loop"
    assert all(not ax.get_lines() for ax in axes[:, 1])  # no CIFAR-100 runs: a note, not curves
