"""Language-model tasks: one short epoch of each through the trainer, BPTT state carry, perplexities, learning."""

import csv
import math

import pytest
import torch
from torch import nn

from conftest import compose
from optbench.tasks.language_model import LanguageModeling
from optbench.train import run

LM_TASKS = ["ptb_lstm", "ptb_lstm_small", "ptb_awd", "tinyshakespeare_char", "wikitext2_lstm"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", LM_TASKS)
def test_one_short_epoch_of_each_language_model_task(task, tmp_path, mini_text_dir):
    cfg = compose(f"task={task}", "optim=sgd", "task.epochs=1", "task.batch_size=4", f"results_dir={tmp_path}",
                  f"data_dir={mini_text_dir}", "device=cpu")
    rows = read_csv(run(cfg) / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert int(rows[1]["step"]) >= 2  # several BPTT windows
    for row in rows:
        for split in ("train", "val", "test"):
            loss, ppl = float(row[f"{split}_loss"]), float(row[f"{split}_ppl"])
            assert 1.0 < ppl < 100.0
            if split != "train" or row["epoch"] == "0":  # evaluated: ppl = exp(per-token cross-entropy)
                assert ppl == pytest.approx(math.exp(loss), rel=1e-9)


def small_task(data_dir, **overrides):
    cfg = {"name": "lm", "kind": "language_model", "dataset": "ptb", "model": "lstm_lm", "batch_size": 4,
           "bptt": 5, "eval_batch_size": 2,
           "model_kwargs": {"embed_dim": 8, "hidden": 8, "layers": 2, "dropout": 0.0, "tie_weights": True}}
    cfg.update(overrides)
    return LanguageModeling(cfg, str(data_dir), torch.device("cpu"))


class Spy(nn.Module):
    """Records the state each call receives and returns."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, tokens, state=None):
        out = self.inner(tokens, state)
        self.calls.append((state, out.state, out.logits))
        return out


def test_state_carries_detached_across_windows_and_resets_each_epoch(mini_text_dir):
    torch.manual_seed(0)
    task = small_task(mini_text_dir)
    task.model = spy = Spy(task.model)
    generator = torch.Generator().manual_seed(0)
    task.start_epoch()
    for batch in task.train_batches(generator):
        loss, _ = task.loss(batch)
        loss.backward()
    calls = spy.calls
    assert len(calls) == task.steps_per_epoch() > 3
    assert calls[0][0] is None  # zeros at the start of the epoch
    for (received, _, _), (_, previous_final, _) in zip(calls[1:], calls[:-1]):
        for r, p in zip(received, previous_final):
            assert torch.equal(r, p)
            assert r.grad_fn is None and not r.requires_grad  # detached
        assert previous_final[0].grad_fn is not None  # ... from a state that was part of a graph
    task.start_epoch()
    task.loss(next(iter(task.train_batches(generator))))
    assert spy.calls[-1][0] is None


def test_carried_windows_equal_one_pass_over_the_stream(mini_text_dir):
    """With dropout off, the windows' logits with the carried state are the logits of a single forward pass
    over each whole row: the carry is the recurrence itself, not an approximation."""
    torch.manual_seed(0)
    task = small_task(mini_text_dir)
    task.model = spy = Spy(task.model)
    task.start_epoch()
    for batch in task.train_batches(torch.Generator()):
        task.loss(batch)
    windows = torch.cat([logits for _, _, logits in spy.calls], 1)
    whole = spy.inner(task.train_data[:, :-1]).logits
    torch.testing.assert_close(windows, whole)


def test_train_ppl_is_the_exponential_of_the_epoch_cross_entropy(mini_text_dir):
    torch.manual_seed(0)
    task = small_task(mini_text_dir)
    task.start_epoch()
    losses, tokens = [], []
    for batch in task.train_batches(torch.Generator()):
        loss, metrics = task.loss(batch)
        losses.append(loss.item())
        tokens.append(batch[1].numel())
    mean_ce = sum(l * n for l, n in zip(losses, tokens)) / sum(tokens)
    assert task.extras()["train_ppl"] == pytest.approx(math.exp(mean_ce), rel=1e-6)
    task.evaluate("train")  # a full evaluation of the training split takes precedence
    assert task.extras() == {}


def test_evaluation_is_per_token_cross_entropy(mini_text_dir):
    torch.manual_seed(0)
    task = small_task(mini_text_dir)
    task.model.eval()
    data = task.eval_data["val"]
    logits = task.model(data[:, :-1]).logits
    expected = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), data[:, 1:].reshape(-1)).item()
    metrics = task.evaluate("val")
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_awd_penalty_is_added_to_the_training_loss_only(mini_text_dir):
    torch.manual_seed(0)
    task = small_task(mini_text_dir, model="awd_lstm", model_kwargs={"embed_dim": 8, "hidden": 12, "layers": 3})
    task.start_epoch()
    batch = next(iter(task.train_batches(torch.Generator())))
    torch.manual_seed(1)
    loss, _ = task.loss(batch)
    ce = task._ce_sum.item() / batch[1].numel()
    torch.manual_seed(1)
    penalty = task.model(batch[0]).penalty.item()
    assert loss.item() == pytest.approx(ce + penalty, rel=1e-5)


def test_variable_bptt_windows_follow_the_trainer_generator(mini_text_dir):
    task = small_task(mini_text_dir, bptt=7, bptt_jitter=True)
    lengths = [x.size(1) for x, _ in task.train_batches(torch.Generator().manual_seed(0))]
    again = [x.size(1) for x, _ in task.train_batches(torch.Generator().manual_seed(0))]
    assert lengths == again and sum(lengths) == task.train_data.size(1) - 1
    assert len(set(lengths)) > 1


def test_small_lstm_learns_the_toy_language(tmp_path, mini_text_dir):
    cfg = compose("task=ptb_lstm_small", "optim=adam", "optim.lr=0.02", "task.epochs=6", "task.batch_size=4",
                  f"results_dir={tmp_path}", f"data_dir={mini_text_dir}", "device=cpu")
    rows = read_csv(run(cfg) / "metrics.csv")
    first, last = float(rows[0]["val_ppl"]), float(rows[-1]["val_ppl"])
    assert first > 10 and last < 0.5 * first
    assert float(rows[-1]["train_ppl"]) < float(rows[1]["train_ppl"])
