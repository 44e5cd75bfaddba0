"""The trainer's speed and logging options through the real configs: AMP (bf16, and fp16 with the gradient
scaler), torch.compile, channels_last, which gradient clip applies, best.pth, the weight-norm log, long variant
names."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from optbench import rundir
from optbench.models.scale_invariant import scale_invariant_weights
from optbench.tasks import build_task
from optbench.train import run

TINY_MLP = ["task=digits_mlp", "task.model_kwargs.hidden=[32]", "device=cpu"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final(run_dir: Path, column: str) -> float:
    return float(read_csv(run_dir / rundir.METRICS)[-1][column])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_the_scaler_in_the_checkpoint(amp, tmp_path):
    full = run(compose(*TINY_MLP, "optim=adam", "optim.lr=0.01", "task.epochs=3", f"results_dir={tmp_path / 'fp32'}"))
    mixed = run(compose(*TINY_MLP, "optim=adam", "optim.lr=0.01", "task.epochs=3", f"trainer.amp={amp}",
                        f"results_dir={tmp_path / amp}"))
    rows = read_csv(mixed / rundir.METRICS)
    assert float(rows[-1]["val_loss"]) < 0.5 * float(rows[0]["val_loss"])
    # a 16-bit forward pass follows the float32 run closely on this small problem
    assert final(mixed, "val_loss") == pytest.approx(final(full, "val_loss"), rel=0.05)
    scaler = torch.load(mixed / rundir.CHECKPOINT, weights_only=True)["scaler"]
    if amp == "fp16":
        assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0
    else:
        assert scaler == {}


def test_fp16_run_resumes_exactly(tmp_path):
    """Resume from the epoch-2 checkpoint (checkpoint.prev.pth of a finished 3-epoch run): the grad scaler's
    state comes back with it, so the third epoch is the same."""
    args = [*TINY_MLP, "optim=adam", "trainer.amp=fp16", "task.epochs=3", "trainer.keep=all"]
    whole = run(compose(*args, f"results_dir={tmp_path / 'whole'}"))
    copy = tmp_path / "copy" / whole.relative_to(tmp_path / "whole")
    shutil.copytree(whole, copy)
    (copy / rundir.PREVIOUS_CHECKPOINT).replace(copy / rundir.CHECKPOINT)
    (copy / rundir.SUMMARY).unlink()
    assert run(compose(*args, f"results_dir={tmp_path / 'copy'}")) == copy

    def rows(run_dir):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in read_csv(run_dir / rundir.METRICS)]

    assert len(rows(copy)) == 4 and rows(copy) == rows(whole)


def assert_compiled_trains_like_eager(tmp_path: Path, model_args: list[str]) -> None:
    """trainer.compile=true gives the eager run's validation loss, and a checkpoint of the plain module."""
    eager = run(compose(*model_args, "optim=momentum", "task.epochs=1", f"results_dir={tmp_path / 'eager'}"))
    compiled = run(compose(*model_args, "optim=momentum", "task.epochs=1", "trainer.compile=true",
                           f"results_dir={tmp_path / 'compiled'}"))
    assert final(compiled, "val_loss") == pytest.approx(final(eager, "val_loss"), rel=1e-4)
    # the checkpoint holds the plain module's state (no "_orig_mod." prefixes from the compiled wrapper)
    state = torch.load(compiled / rundir.CHECKPOINT, weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in state)


def test_compiled_model_trains_like_the_eager_one(tmp_path):
    assert_compiled_trains_like_eager(tmp_path, TINY_MLP)


def test_channels_last_feeds_nhwc_and_trains_like_nchw(tmp_path, mini_cifar_dir):
    args = ["task=cifar10", "task.model=resnet20", "task.epochs=1", "task.batch_size=16", "optim=momentum",
            f"data_dir={mini_cifar_dir}", "device=cpu"]
    plain = run(compose(*args, f"results_dir={tmp_path / 'nchw'}"))
    nhwc = run(compose(*args, "trainer.channels_last=true", f"results_dir={tmp_path / 'nhwc'}"))
    assert final(nhwc, "val_loss") == pytest.approx(final(plain, "val_loss"), rel=1e-4)
    cfg = OmegaConf.to_container(compose(*args).task, resolve=True)
    task = build_task(cfg, str(mini_cifar_dir), torch.device("cpu"))
    task.to_channels_last()
    x, _ = next(iter(task.train_batches(torch.Generator().manual_seed(0))))
    assert x.is_contiguous(memory_format=torch.channels_last)
    conv = next(p for p in task.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_trainer_grad_clip_takes_precedence_over_the_tasks(tmp_path):
    def moved(*overrides: str) -> float:
        run_dir = run(compose(*TINY_MLP, "optim=sgd", "optim.lr=0.5", "task.epochs=1", *overrides,
                              f"results_dir={tmp_path / str(len(list(tmp_path.iterdir())))}"))
        rows = read_csv(run_dir / rundir.METRICS)
        return abs(float(rows[1]["val_loss"]) - float(rows[0]["val_loss"]))

    free = moved()
    assert moved("++task.grad_clip=1e-6") < 1e-3 * free  # the task's clip applies when the trainer sets none
    assert moved("++task.grad_clip=1e-6", "trainer.grad_clip=1000") == pytest.approx(free, rel=1e-6)


def test_best_checkpoint_holds_the_epoch_with_the_lowest_validation_loss(tmp_path):
    # a large lr makes the validation loss go up and down, so the best epoch is not simply the last
    run_dir = run(compose(*TINY_MLP, "optim=sgd", "optim.lr=2.0", "task.epochs=6", f"results_dir={tmp_path}"))
    rows = read_csv(run_dir / rundir.METRICS)
    losses = [float(r["val_loss"]) for r in rows]
    best = torch.load(run_dir / rundir.BEST, weights_only=True)
    assert best["epoch"] == min(range(len(losses)), key=lambda i: (losses[i] if math.isfinite(losses[i])
                                                                    else math.inf))
    cfg = OmegaConf.to_container(compose(*TINY_MLP).task, resolve=True)
    task = build_task(cfg, "", torch.device("cpu"))
    task.model.load_state_dict(best["model"])
    task.model.eval()
    assert task.evaluate("val")["loss"] == pytest.approx(losses[best["epoch"]], rel=1e-6)


def test_weight_norm_is_logged_from_the_scale_invariant_weights(tmp_path, mini_cifar_dir):
    run_dir = run(compose("task=cifar10", "task.model=resnet20", "task.epochs=1", "task.batch_size=16",
                          "optim=sgdp", "log_weight_norm=true", "trainer.log_every=1", f"data_dir={mini_cifar_dir}",
                          "device=cpu", f"results_dir={tmp_path}"))
    cfg = OmegaConf.to_container(compose("task=cifar10", "task.model=resnet20").task, resolve=True)
    task = build_task(cfg, str(mini_cifar_dir), torch.device("cpu"))
    task.model.load_state_dict(torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)["model"])
    weights = [p for _, p in scale_invariant_weights(task.model)]
    assert len(weights) == 19  # ResNet-20: every conv is followed by batch norm
    expected = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in weights))
    assert final(run_dir, "weight_norm") == pytest.approx(expected, rel=1e-6)
    steps = read_csv(run_dir / rundir.STEPS)
    assert float(steps[-1]["weight_norm"]) == pytest.approx(expected, rel=1e-6)


def test_long_variant_names_stay_short_distinct_and_stable(tmp_path):
    base = {"optim": {"name": "adam", "lr": 1e-3}, "task": {"name": "t", "epochs": 1}, "trainer": {}}

    def variant(**task):
        cfg = {**base, "task": {**base["task"], **task}}
        return rundir.variant_name(cfg, base)

    long_a = variant(**{f"knob_{i:02d}": i for i in range(30)})
    long_b = variant(**{f"knob_{i:02d}": i + (i == 29) for i in range(30)})  # differs only at the end
    assert len(long_a) <= 120 and len(long_b) <= 120
    assert long_a != long_b and long_a.startswith("task.knob_00=0,")
    assert variant(**{f"knob_{i:02d}": i for i in range(30)}) == long_a
    run_dir = run(compose(*TINY_MLP, "task.epochs=1", *[f"++task.extra_setting_{i}={i}" for i in range(12)],
                          f"results_dir={tmp_path}"))
    assert len(run_dir.parent.name) <= 120 and (run_dir / rundir.SUMMARY).exists()


def test_progress_none_prints_neither_bar_nor_epoch_lines(tmp_path, capfd):
    run(compose(*TINY_MLP, "optim=sgd", "task.epochs=1", "trainer.progress=none", f"results_dir={tmp_path}"))
    out, err = capfd.readouterr()
    assert "epoch 1/1" not in out + err and "it/s" not in out + err, out + err
