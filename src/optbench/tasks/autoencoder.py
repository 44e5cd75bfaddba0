"""AggMo's deep autoencoder task on MNIST / Fashion-MNIST: pixels scaled to [0, 1] (ToTensor, no
normalisation), binary cross-entropy averaged over pixels and examples as the training loss (AggMo's
``F.binary_cross_entropy`` default), and the reported metric ``sse``: squared reconstruction error summed over
the 784 pixels, averaged over examples. The best checkpoint is chosen by validation sse, as in AggMo.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import torch
import torch.nn.functional as F

from optbench.data.batches import num_batches, sequential_batches, shuffled_batches, split_train_val
from optbench.models import build_model
from optbench.tasks.base import Task, dataset_name

# task.dataset -> folder of the IDX files under data_dir
DATASETS = {"mnist": "MNIST", "fmnist": "FashionMNIST"}


class Autoencoding(Task):
    metric_names = ("sse",)
    best_metric = "sse"

    def __init__(self, cfg: Mapping, data_dir: str, device: torch.device):
        from optbench.data.idx import load_idx_dataset

        self.name = cfg["name"]
        data = load_idx_dataset(DATASETS[dataset_name(cfg, DATASETS)], data_dir, bool(cfg.get("download", False)))
        x_train = data["train"][0]
        fit, val = split_train_val(len(x_train), float(cfg["val_fraction"]))
        limit = cfg.get("train_limit")  # optional: first N training examples (quick runs)
        if limit:
            fit = slice(0, min(int(limit), fit.stop))
        self.device = device
        # uint8 [N, pixels] on the device; labels are not needed
        self.splits = {name: x.reshape(len(x), -1).to(device)
                       for name, x in (("train", x_train[fit]), ("val", x_train[val]), ("test", data["test"][0]))}
        self.batch_size = int(cfg["batch_size"])
        self.eval_batch_size = int(cfg.get("eval_batch_size") or 1000)
        in_features = self.splits["train"].shape[1]
        self.model = build_model(cfg["model"], in_features=in_features, **(cfg.get("model_kwargs") or {})).to(device)

    @staticmethod
    def inputs(x_uint8: torch.Tensor) -> torch.Tensor:
        return x_uint8.float().div_(255.0)

    def steps_per_epoch(self) -> int:
        return num_batches(len(self.splits["train"]), self.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor]]:
        """1-tuples (images,), the same batch structure as the other tasks (so batches shard alike)."""
        x = self.splits["train"]
        for idx in shuffled_batches(len(x), self.batch_size, generator, self.device):
            yield (self.inputs(x[idx]),)

    @staticmethod
    def losses(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(BCE summed over pixels, squared error summed over pixels), per example."""
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        sse = (torch.sigmoid(logits) - x).pow(2).sum(1)
        return bce, sse

    def loss(self, batch: tuple[torch.Tensor]):
        (x,) = batch
        bce, sse = self.losses(self.net(x), x)
        return bce.mean() / x.size(1), {"sse": sse.detach().mean()}

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        x = self.splits[split]
        if len(x) == 0:
            return {"loss": float("nan"), "sse": float("nan")}
        bce_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        sse_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        for sl in sequential_batches(len(x), self.eval_batch_size):
            batch = self.inputs(x[sl])
            bce, sse = self.losses(self.net(batch), batch)
            bce_sum += bce.sum()
            sse_sum += sse.sum()
        return {"loss": bce_sum.item() / x.numel(), "sse": sse_sum.item() / len(x)}


def build(cfg: Mapping, data_dir: str, device: torch.device) -> Autoencoding:
    return Autoencoding(cfg, data_dir, device)
