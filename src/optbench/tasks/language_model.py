"""Language modelling (PTB, WikiText-2, TinyShakespeare) with truncated BPTT.

The corpus is tokenised once and kept on the device as [batch, tokens] rows (optbench.data.text.batchify).
An epoch walks the rows left to right in BPTT windows; the recurrent state at window k+1 starts from window
k's final state, detached (gradients stop at the window boundary), and is reset to zeros at every epoch start.
Evaluation does the same over the split with ``eval_batch_size`` rows (10, as in the papers' code) under
inference mode and reports the per-token cross-entropy and its exponential, the perplexity.

Training perplexity: the trainer averages per-step metrics, and a mean of per-window perplexities is not a
perplexity, so the task accumulates the epoch's cross-entropy itself and reports ``train_ppl`` =
exp(mean cross-entropy) through ``extras()``. ``train_loss`` is the epoch mean of the optimised loss (for
AWD-LSTM it includes the AR/TAR penalty; the perplexity never does). Under data parallelism every process
calls ``extras()`` at the same points (the trainer's epoch log), so the sums are added over processes there:
train_ppl is that of the global batch, as a single process would report it.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F

from optbench.data.text import batchify, bptt_windows, load_corpus, num_windows
from optbench.models import build_model
from optbench.models.lstm import detach_state
from optbench.tasks.base import Task, dataset_name

DATASETS = ("ptb", "wikitext2", "tinyshakespeare")


class LanguageModeling(Task):
    metric_names = ("ppl",)

    def __init__(self, cfg: Mapping, data_dir: str, device: torch.device):
        self.name = cfg["name"]
        self.device = device
        corpus = load_corpus(dataset_name(cfg, DATASETS), data_dir)
        self.vocab_size = len(corpus.vocab)
        self.batch_size = int(cfg["batch_size"])
        self.eval_batch_size = int(cfg.get("eval_batch_size") or 10)
        self.bptt = int(cfg["bptt"])
        self.bptt_jitter = bool(cfg.get("bptt_jitter", False))
        if self.bptt < 1:
            raise ValueError(f"task.bptt must be >= 1, got {self.bptt}")
        self.train_data = batchify(corpus.train, self.batch_size).to(device)
        self.eval_data = {split: batchify(corpus.split(split), self.eval_batch_size).to(device)
                          for split in ("train", "val", "test")}
        self.model = build_model(cfg["model"], vocab_size=self.vocab_size, **(cfg.get("model_kwargs") or {}))
        self.model.to(device)
        self.state = None
        self._ce_sum = torch.zeros((), device=device, dtype=torch.float64)
        self._tokens = 0
        self._train_evaluated = False

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        """Exact for fixed-length windows; the expected count with AWD-LSTM's variable lengths."""
        return num_windows(self.train_data, self.bptt)

    def start_epoch(self) -> None:
        self.state = None
        self._ce_sum.zero_()
        self._tokens = 0
        self._train_evaluated = False

    def state_dict(self) -> dict:
        """Mid-epoch state (a checkpoint written when a run is stopped inside an epoch): the hidden state carried
        into the next window and the running training cross-entropy."""
        return {"state": self.state, "ce_sum": self._ce_sum, "tokens": self._tokens,
                "train_evaluated": self._train_evaluated}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.state, self._tokens = state["state"], int(state["tokens"])
            self._ce_sum = state["ce_sum"].to(self._ce_sum)
            self._train_evaluated = bool(state["train_evaluated"])

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return bptt_windows(self.train_data, self.bptt, generator if self.bptt_jitter else None)

    def loss(self, batch):
        inputs, targets = batch
        out = self.net(inputs, self.state)
        self.state = detach_state(out.state)  # the next window starts here, without a path back
        ce = F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)).float(), targets.reshape(-1))
        self._ce_sum += ce.detach() * targets.numel()
        self._tokens += targets.numel()
        loss = ce if out.penalty is None else ce + out.penalty
        return loss, {}

    def extras(self) -> dict[str, float]:
        if self._tokens == 0 or self._train_evaluated:  # before training, or a full train evaluation wins
            return {}
        sums = torch.stack([self._ce_sum.double(), torch.tensor(float(self._tokens), dtype=torch.float64,
                                                                device=self._ce_sum.device)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        ce_sum, tokens = sums.tolist()
        return {"train_ppl": math.exp(ce_sum / tokens)}

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        data = self.eval_data[split]
        ce_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        state = None
        for inputs, targets in bptt_windows(data, self.bptt):
            out = self.net(inputs, state)
            state = out.state
            ce_sum += F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)).float(), targets.reshape(-1),
                                      reduction="sum")
        if split == "train":
            self._train_evaluated = True
        loss = ce_sum.item() / (data.size(0) * (data.size(1) - 1))
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}


def build(cfg: Mapping, data_dir: str, device: torch.device) -> LanguageModeling:
    return LanguageModeling(cfg, data_dir, device)
