"""The ImageNet task (AdamP's main setting) on a miniature JPEG tree in the real ImageFolder layout: one epoch
through the real trainer with the weight-norm and effective-step columns, the DataLoader pipeline (torchvision's
crops, the same batches with any worker count, a mid-epoch resume that decodes nothing twice), the clear error
for a missing dataset, and the composed presets against the values the paper states."""

from __future__ import annotations

import csv
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose
from optbench import rundir
from optbench.checks import check_run
from optbench.data import imagenet as data
from optbench.errors import RunInterrupted
from optbench.models.scale_invariant import scale_invariant_weights
from optbench.run_config import optimizer_config, schedule_config
from optbench.tasks import build_task
from optbench.tasks.imagenet import ImageNetClassification
from optbench.train import run

WNIDS = ("n01440764", "n01443537", "n01484850")
TINY = ["task.image_size=32", "task.batch_size=8", "task.eval_batch_size=16", "task.epochs=1", "task.num_workers=0",
        "device=cpu", "trainer.log_every=1"]


def write_mini_imagenet(root: Path, train_per_class: int = 8, val_per_class: int = 2, seed: int = 0) -> Path:
    """<root>/imagenet/{train,val}/<wnid>/*.JPEG: small JPEGs of assorted sizes whose class is readable from the
    colour (plus noise), one of them greyscale, as real ImageNet has some."""
    rng = np.random.RandomState(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(WNIDS):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.randint(28, 48), rng.randint(28, 64)
                pixels = rng.randint(0, 60, size=(h, w, 3))
                pixels[..., label] += 180
                image = Image.fromarray(pixels.astype(np.uint8))
                image = image.convert("L") if (split, label, i) == ("train", 0, 0) else image
                image.save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def mini_imagenet(tmp_path_factory) -> Path:
    return write_mini_imagenet(tmp_path_factory.mktemp("data"))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def task_config(*overrides: str) -> dict:
    return OmegaConf.to_container(compose("experiment=adamp/imagenet_resnet18", *TINY, *overrides).task,
                                  resolve=True)


def test_one_epoch_through_the_trainer_logs_weight_norm_and_effective_step(tmp_path, mini_imagenet):
    run_dir = run(compose("experiment=adamp/imagenet_resnet18", "optim=sgdp", *TINY, f"data_dir={mini_imagenet}",
                          f"results_dir={tmp_path}", "trainer.channels_last=true"))
    assert run_dir.parts[-4:-2] == ("imagenet", "sgdp")
    for name in ("config.yaml", "metrics.csv", "steps.csv", "checkpoint.pth", "best.pth", "summary.json"):
        assert (run_dir / name).exists(), name
    metrics, steps = read_csv(run_dir / rundir.METRICS), read_csv(run_dir / rundir.STEPS)
    assert [int(r["epoch"]) for r in metrics] == [0, 1] and int(metrics[-1]["step"]) == 3  # 24 images / 8
    for column in ("lr", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "weight_norm",
                   "effective_step"):
        assert column in metrics[0], column
    assert [int(r["step"]) for r in steps] == [1, 2, 3] and "effective_step" in steps[0]
    assert metrics[-1]["val_acc"] == metrics[-1]["test_acc"]  # val_split test: the official val set, as the paper

    model = build_task(task_config(), str(mini_imagenet), torch.device("cpu")).model
    model.load_state_dict(torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)["model"])
    weights = [w for _, w in scale_invariant_weights(model)]
    assert len(weights) == 20  # every convolution of ResNet-18 is followed by batch norm
    squares = [float(w.detach().pow(2).sum()) for w in weights]
    lr = float(steps[-1]["lr"])
    assert float(steps[-1]["weight_norm"]) == pytest.approx(math.sqrt(sum(squares)), rel=1e-6)
    assert float(steps[-1]["effective_step"]) == pytest.approx(sum(lr / s for s in squares) / len(squares), rel=1e-6)


@pytest.mark.parametrize("name, params, invariant", [("torchvision_resnet18", 11_689_512, 20),
                                                     ("torchvision_resnet50", 25_557_032, 53)])
def test_the_models_are_torchvision_s_and_every_convolution_is_scale_invariant(name, params, invariant):
    from optbench.models import build_model, count_parameters

    model = build_model(name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert count_parameters(model) == params and len(scale_invariant_weights(model)) == len(convs) == invariant


def test_a_missing_dataset_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        build_task(task_config(), str(tmp_path), torch.device("cpu"))
    message = str(err.value)
    assert str(tmp_path / "imagenet" / "train") in message and "image-net.org" in message
    assert "extract_ILSVRC.sh" in message


def test_the_flat_official_val_folder_is_named_with_the_fix(tmp_path):
    root = write_mini_imagenet(tmp_path, train_per_class=1, val_per_class=0)
    for folder in (root / "imagenet" / "val").iterdir():
        folder.rmdir()
    Image.new("RGB", (8, 8)).save(root / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(data.DatasetNotFoundError, match="class folder") as err:
        build_task(task_config(), str(tmp_path), torch.device("cpu"))
    assert str(root / "imagenet" / "val") in str(err.value) and "extract_ILSVRC.sh" in str(err.value)


def test_val_must_have_train_s_classes(tmp_path):
    root = write_mini_imagenet(tmp_path, train_per_class=1, val_per_class=1)
    for image in (root / "imagenet" / "val" / WNIDS[2]).iterdir():
        image.unlink()
    (root / "imagenet" / "val" / WNIDS[2]).rmdir()
    with pytest.raises(data.DatasetError, match=f"only in train: \\['{WNIDS[2]}'\\]"):
        build_task(task_config(), str(tmp_path), torch.device("cpu"))


def test_train_and_eval_images_are_torchvision_s_transforms():
    """The crop and flip are torchvision's RandomResizedCrop + RandomHorizontalFlip drawn from a torch RNG seeded
    with the image's seed; evaluation is Resize + CenterCrop."""
    from torchvision import transforms

    rng = np.random.RandomState(0)
    image = Image.fromarray(rng.randint(0, 256, size=(50, 70, 3)).astype(np.uint8))
    thin = Image.fromarray(rng.randint(0, 256, size=(4, 200, 3)).astype(np.uint8))  # 10 misses: the central crop
    standard = transforms.Compose([transforms.RandomResizedCrop(24), transforms.RandomHorizontalFlip()])
    for picture in (image, thin):
        for seed in range(20):
            torch.manual_seed(seed)
            expected = np.array(standard(picture))
            state = torch.get_rng_state()
            assert np.array_equal(np.array(data.train_image(picture, 24, seed)), expected)
            assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    evaluation = transforms.Compose([transforms.Resize(27), transforms.CenterCrop(24)])
    assert np.array_equal(np.array(data.eval_image(image, 24, 27)), np.array(evaluation(image)))


def first_batches(task: ImageNetClassification, seed: int, count: int = 2) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [batch for _, batch in zip(range(count), task.train_batches(generator))]


def test_batches_are_the_same_with_any_worker_count(mini_imagenet):
    in_process = build_task(task_config(), str(mini_imagenet), torch.device("cpu"))
    two_workers = build_task(task_config("task.num_workers=2"), str(mini_imagenet), torch.device("cpu"))
    assert two_workers.loader.num_workers == 2 and two_workers.loader.persistent_workers
    for (x0, y0), (x2, y2) in zip(first_batches(in_process, 3), first_batches(two_workers, 3)):
        assert x0.shape == (8, 3, 32, 32) and x0.dtype == torch.float32
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    again = first_batches(in_process, 4)
    assert not torch.equal(again[0][0], first_batches(in_process, 3)[0][0])  # another epoch, other crops


def test_held_out_validation_is_the_end_of_every_class(mini_imagenet):
    fit, held_out = data.split_per_class([0] * 10 + [1] * 20, 0.1)
    assert held_out == [9, 28, 29] and len(fit) == 27
    task = build_task(task_config("task.val_fraction=0.25", "task.val_split=held_out"), str(mini_imagenet),
                      torch.device("cpu"))
    assert len(task.splits["train"]) == 18 and len(task.splits["val"]) == 6 and len(task.splits["test"]) == 6
    assert task.steps_per_epoch() == 3


def test_val_and_test_share_one_evaluation_when_they_are_the_same_images(mini_imagenet, monkeypatch):
    task = build_task(task_config(), str(mini_imagenet), torch.device("cpu"))
    calls = []
    evaluate_images = task.evaluate_images
    monkeypatch.setattr(task, "evaluate_images", lambda ids: calls.append(len(ids)) or evaluate_images(ids))
    task.model.eval()
    assert task.evaluate("val") == task.evaluate("test") and calls == [6]
    task.loss(next(iter(first_batches(task, 0, 1))))  # the weights may change: evaluate again
    task.evaluate("val"), task.evaluate("test")
    assert calls == [6, 6]


def test_an_epoch_interrupted_mid_way_resumes_to_the_same_logs_without_decoding_twice(tmp_path, mini_imagenet,
                                                                                     monkeypatch):
    args = ["experiment=adamp/imagenet_resnet18", "optim=adamp", *TINY, "task.epochs=2", f"data_dir={mini_imagenet}",
            "task.model=resnet20"]  # any model: the resume is the data pipeline's; a thin ResNet saves seconds
    whole = run(compose(*args, f"results_dir={tmp_path / 'whole'}"))
    decoded = []
    getitem = data.ImageNetImages.__getitem__
    monkeypatch.setattr(data.ImageNetImages, "__getitem__", lambda self, item: decoded.append(item) or
                        getitem(self, item))
    loss, steps = ImageNetClassification.loss, []

    def loss_then_sigterm(self, batch):
        steps.append(1)
        if len(steps) == 5:  # the second step of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(self, batch)

    monkeypatch.setattr(ImageNetClassification, "loss", loss_then_sigterm)
    with pytest.raises(RunInterrupted):
        run(compose(*args, f"results_dir={tmp_path / 'split'}"))
    decoded.clear()
    resumed = run(compose(*args, f"results_dir={tmp_path / 'split'}"))
    trained = [item for item in decoded if item[1] is not None]
    assert len(trained) == 8  # only the epoch's last batch was decoded again: the first two were skipped
    for name in (rundir.METRICS, rundir.STEPS):
        drop = ("time_s",)
        a = [{k: v for k, v in r.items() if k not in drop} for r in read_csv(whole / name)]
        b = [{k: v for k, v in r.items() if k not in drop} for r in read_csv(resumed / name)]
        assert a == b, name


def script_optim(optim: str) -> list[str]:
    """The overrides scripts/adamp.sh gives each optimizer."""
    return ["optim=nesterov", "optim.lr=0.1"] if optim == "nesterov" else [f"optim={optim}"]


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_imagenet_presets_compose_the_paper_setting(model):
    """Heo et al. (ICLR 2021), Sec. 4.1: 100 epochs, batch 256, cosine schedule; SGD and SGDP at lr 0.1 with
    Nesterov momentum 0.9, AdamP (and its baseline AdamW) at lr 1e-3 and decoupled weight decay 1e-2, SGDP at
    1e-5 (clovaai/AdamP's README), the SGD baseline at the standard coupled 1e-4."""
    expected = {"nesterov": (0.1, 1e-4), "sgdp": (0.1, 1e-5), "adamw": (1e-3, 1e-2), "adamp": (1e-3, 1e-2)}
    for optim, (lr, weight_decay) in expected.items():
        cfg = OmegaConf.to_container(compose(f"experiment=adamp/imagenet_{model}", *script_optim(optim)),
                                     resolve=True)
        check_run(cfg)
        task = cfg["task"]
        assert task["name"] == "imagenet" and task["model"] == f"torchvision_{model}"
        assert (task["epochs"], task["batch_size"], task["image_size"]) == (100, 256, 224)
        assert (task["val_fraction"], task["val_split"]) == (0.0, "test")
        assert schedule_config(cfg)["name"] == "cosine" and cfg["log_weight_norm"] is True
        settings = optimizer_config(cfg)
        assert (settings["lr"], settings["weight_decay"]) == (lr, weight_decay), optim
        if optim in ("nesterov", "sgdp"):
            assert settings["momentum"] == 0.9 and settings["nesterov"] is True
        else:
            assert settings["betas"] == [0.9, 0.999]
        if optim in ("sgdp", "adamp"):
            assert (settings["delta"], settings["wd_ratio"]) == (0.1, 0.1)


def test_the_cifar_stand_in_uses_the_paper_s_cosine_schedule():
    cfg = OmegaConf.to_container(compose("experiment=adamp/cifar10", "optim=nesterov", "optim.lr=0.1"), resolve=True)
    check_run(cfg)
    schedule = schedule_config(cfg)
    assert schedule["name"] == "cosine" and not schedule["milestones"]
    assert cfg["task"]["epochs"] == 100 and cfg["task"]["model"] == "resnet18" and cfg["log_weight_norm"] is True
    assert optimizer_config(cfg)["weight_decay"] == 1e-4
