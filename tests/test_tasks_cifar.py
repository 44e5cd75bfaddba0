"""CIFAR tasks: the configs build the papers' models, and one short epoch of each runs through the trainer."""

import csv

import pytest
import torch

from conftest import compose
from optbench.models import count_parameters
from optbench.tasks import build_task
from optbench.train import run

CIFAR_TASKS = {"cifar10": 21_282_122, "cifar100": 21_328_292, "cifar10_vgg": 15_253_578,
               "cifar100_vgg": 15_299_748}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task, parameters", CIFAR_TASKS.items())
def test_one_short_epoch_of_each_cifar_task(task, parameters, tmp_path, mini_cifar_dir):
    overrides = [f"task={task}", "optim=sgd", "task.epochs=1", "task.batch_size=4", "++task.train_limit=8",
                 "++task.eval_batch_size=16", f"results_dir={tmp_path}", f"data_dir={mini_cifar_dir}", "device=cpu"]
    cfg = compose(*overrides)
    assert cfg.task.augment == "crop_flip" and cfg.task.batch_size == 4
    torch.manual_seed(0)
    built = build_task(cfg.task, str(mini_cifar_dir), torch.device("cpu"))
    assert count_parameters(built.model) == parameters
    rows = read_csv(run(cfg) / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["step"] == "2"
    for split in ("train", "val", "test"):
        assert 0.0 <= float(rows[1][f"{split}_acc"]) <= 1.0
        assert float(rows[1][f"{split}_loss"]) > 0.0


def test_cifar_configs_carry_the_papers_settings():
    resnet = compose("task=cifar10").task
    assert (resnet.model, resnet.batch_size, resnet.epochs, resnet.weight_decay) == ("resnet34", 128, 400, 5e-4)
    assert resnet.lr_schedule.name == "step" and list(resnet.lr_schedule.milestones) == [150, 250]
    assert resnet.lr_schedule.lr_decay == 0.1 and resnet.val_fraction == 0.1
    vgg = compose("task=cifar10_vgg").task
    assert (vgg.model, vgg.batch_size, vgg.epochs, vgg.weight_decay) == ("vgg16_bn", 128, 200, 1e-4)

def test_other_resnets_are_chosen_by_task_model(mini_cifar_dir):
    cfg = compose("task=cifar100", "task.model=resnet56", f"data_dir={mini_cifar_dir}").task
    task = build_task(cfg, str(mini_cifar_dir), torch.device("cpu"))
    assert count_parameters(task.model) == 858_868  # He et al.'s ResNet-56 with a 100-way classifier
