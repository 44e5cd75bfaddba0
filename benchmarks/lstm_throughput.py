"""Training tokens per second of the ptb_lstm task (tied 2 x 650 LSTM, BPTT 35, batch 20, clip 1.0) through
optbench.train's Trainer vs a bare truncated-BPTT loop over the same model, in one process. Goal: within 5%.

    python benchmarks/lstm_throughput.py [--tokens 21000] [--repeats 3] [--device cpu] [--threads N]
                                         [--vocab 10000] [--hidden 650]

The corpus is random text over a 10,000-word vocabulary (PTB's size) written as ptb/{train,valid,test}.txt in a
temporary directory; --tokens sets the training length (the default, 21,000 tokens = 30 windows of 20 x 35, suits
a CPU; use the full PTB size, 929,589, on a GPU). The optbench side is a whole 1-epoch fit(): the training
epoch, evaluation of the small validation and test files (300 tokens each) and the checkpoint; the epoch-0
evaluation is not timed. The bare loop does the same training steps: forward with the carried detached state,
cross-entropy, backward, clip, SGD step. A few untimed bare steps run first (cuDNN's first calls). --vocab and
--hidden shrink the problem for a quick check of the script (the measurements want the defaults).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import compose  # noqa: E402

from _timing import print_comparison, time_trainer, timed  # noqa: E402

from optbench.tasks import build_task  # noqa: E402

VOCAB = 10_000


def write_random_ptb(root: Path, train_tokens: int, eval_tokens: int = 300, seed: int = 0, vocab: int = VOCAB
                     ) -> None:
    """Lines of 20 words drawn uniformly (every word appears in train, so the vocabulary is exactly ``vocab``)."""
    rng = np.random.RandomState(seed)
    words = [f"w{i}" for i in range(vocab - 1)]  # + <eos>
    folder = root / "ptb"
    folder.mkdir(parents=True)
    for split, n in (("train", train_tokens), ("valid", eval_tokens), ("test", eval_tokens)):
        ids = rng.randint(0, len(words), size=n)
        if split == "train":
            ids[: len(words)] = rng.permutation(len(words))
        lines = [" ".join(words[i] for i in ids[s:s + 20]) for s in range(0, n, 20)]
        (folder / f"{split}.txt").write_text("".join(f" {line} \n" for line in lines))


def bare_epoch(model, data: torch.Tensor, bptt: int, clip: float, lr: float) -> int:
    """data [batch, T] on the device; returns the number of trained tokens."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    state, tokens = None, 0
    for start in range(0, data.size(1) - 1, bptt):
        length = min(bptt, data.size(1) - 1 - start)
        inputs, targets = data[:, start:start + length], data[:, start + 1:start + 1 + length]
        logits, state, _ = model(inputs, state)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += targets.numel()
    loss.item()
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=21_000, help="training tokens (random 10k-word text)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's); 1 avoids OpenMP stalls on a busy shared CPU")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="vocabulary size (PTB's: 10,000)")
    parser.add_argument("--hidden", type=int, default=650, help="embedding and LSTM width (tied; the task's: 650)")
    args = parser.parse_args()
    if args.tokens < args.vocab:
        parser.error(f"--tokens must be at least --vocab={args.vocab} (every word of the vocabulary appears in "
                     "train)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        write_random_ptb(Path(tmp), args.tokens, vocab=args.vocab)
        from omegaconf import OmegaConf

        cfg = compose("task=ptb_lstm", "optim=sgd", "optim.lr=1.0", "task.epochs=1", f"data_dir={tmp}",
                      f"results_dir={tmp}/results", f"device={args.device}",
                      f"task.model_kwargs.embed_dim={args.hidden}", f"task.model_kwargs.hidden={args.hidden}")
        cfg = OmegaConf.to_container(cfg, resolve=True)
        torch.manual_seed(0)
        task = build_task(cfg["task"], tmp, device)
        assert task.vocab_size == args.vocab
        initial = copy.deepcopy(task.model.state_dict())
        warmup = task.train_data[:, :3 * task.bptt + 1]  # untimed: cuDNN's first forward and backward calls
        timed(lambda: bare_epoch(task.model, warmup, task.bptt, cfg["task"]["grad_clip"], cfg["optim"]["lr"]),
              device)
        t_optbench, t_train, t_bare, ratios, train_ratios = [], [], [], [], []
        for repeat in range(args.repeats):
            task.model.load_state_dict(initial)
            t1, t_epoch, trainer = time_trainer(cfg, task, Path(tmp) / f"run{repeat}", device, epochs=1)
            task.model.load_state_dict(initial)
            t2, tokens = timed(lambda: bare_epoch(task.model, task.train_data, task.bptt, cfg["task"]["grad_clip"],
                                                  cfg["optim"]["lr"]), device)
            t_optbench.append(t1)
            t_bare.append(t2)
            ratios.append(t1 / t2)
            t_train.append(t_epoch)
            train_ratios.append(t_epoch / t2)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} train tokens={tokens} "
          f"steps={trainer.step} (ptb_lstm: tied 2 x {args.hidden}, vocab {args.vocab}, batch 20, bptt 35, "
          "clip 1.0, SGD)")
    print_comparison([("optbench Trainer (ptb_lstm task), whole fit()", t_optbench),
                      ("... of which the training epoch", t_train), ("bare BPTT loop", t_bare)],
                     tokens, "tokens", [("fit()", ratios), ("training epoch", train_ratios)], "goal within 5%")

if __name__ == "__main__":
    main()
