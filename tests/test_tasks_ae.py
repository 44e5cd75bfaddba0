"""Deep autoencoder tasks: one short epoch of each through the trainer, the loss and metric definitions, learning."""

import csv

import pytest
import torch
from omegaconf import OmegaConf
import torch.nn.functional as F

from conftest import compose
from optbench.tasks.autoencoder import Autoencoding
from optbench.train import run


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", ["mnist_ae", "fmnist_ae"])
def test_one_short_epoch_of_each_autoencoder_task(task, tmp_path, mini_data_dir):
    cfg = compose(f"task={task}", "optim=sgd", "task.epochs=1", "task.batch_size=50", f"results_dir={tmp_path}",
                  f"data_dir={mini_data_dir}", "device=cpu")
    run_dir = run(cfg)
    rows = read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["step"] == "4"  # 180 images / 50 per batch
    for split in ("train", "val", "test"):
        assert 0.0 < float(rows[1][f"{split}_loss"]) < 1.0
        assert 0.0 < float(rows[1][f"{split}_sse"]) < 784.0
    assert (run_dir / "best.pth").exists()


def test_loss_is_pixel_mean_bce_and_sse_is_per_example_squared_error(mini_data_dir):
    torch.manual_seed(0)
    cfg = {"name": "ae", "dataset": "mnist", "model": "deep_autoencoder", "batch_size": 20, "val_fraction": 0.1}
    task = Autoencoding(cfg, str(mini_data_dir), torch.device("cpu"))
    assert task.splits["train"].shape == (180, 784) and task.splits["val"].shape == (20, 784)
    (batch,) = next(iter(task.train_batches(torch.Generator().manual_seed(0))))
    assert batch.shape == (20, 784) and 0.0 <= batch.min() and batch.max() <= 1.0
    loss, metrics = task.loss((batch,))
    recon = task.model.reconstruct(batch)
    # AggMo's definitions: F.binary_cross_entropy(sigmoid output, x) and sum_pixels mean_batch (recon - x)^2
    torch.testing.assert_close(loss, F.binary_cross_entropy(recon, batch))
    torch.testing.assert_close(metrics["sse"], ((recon - batch) ** 2).mean(0).sum())
    task.model.eval()
    x = task.inputs(task.splits["test"])
    recon = task.model.reconstruct(x)
    result = task.evaluate("test")
    assert result["loss"] == pytest.approx(F.binary_cross_entropy(recon, x).item(), rel=1e-5)
    assert result["sse"] == pytest.approx(((recon - x) ** 2).sum(1).mean().item(), rel=1e-5)


def test_autoencoder_learns_more_than_the_mean_image(tmp_path, mini_data_dir):
    cfg = compose("task=mnist_ae", "optim=adam", "optim.lr=0.003", "task.epochs=8", "task.batch_size=20",
                  f"results_dir={tmp_path}", f"data_dir={mini_data_dir}", "device=cpu")
    rows = read_csv(run(cfg) / "metrics.csv")
    # the best reconstruction that ignores its input: the mean training image
    task = Autoencoding(OmegaConf.to_container(cfg.task, resolve=True), str(mini_data_dir), torch.device("cpu"))
    mean_image = task.inputs(task.splits["train"]).mean(0)
    baseline = ((task.inputs(task.splits["val"]) - mean_image) ** 2).sum(1).mean().item()
    assert float(rows[-1]["val_sse"]) < 0.75 * baseline < float(rows[0]["val_sse"])
