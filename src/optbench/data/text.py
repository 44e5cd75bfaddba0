"""Language-modelling corpora as token-id tensors, and the batching every LSTM LM uses.

Word corpora (PTB, WikiText-2) follow the convention of the PyTorch word-language-model example and of
AWD-LSTM, so perplexities are comparable with the papers: every line is split on whitespace and ends with an
``<eos>`` token (an empty line is just ``<eos>``); the vocabulary is built from the training split in order of
first appearance; a validation/test word missing from it becomes ``<unk>`` (PTB and WikiText-2 are
preprocessed so that this never happens, and their own ``<unk>`` token is an ordinary word).
Characters (TinyShakespeare): the vocabulary is every character of input.txt, sorted (as char-rnn does), and
the text is split 90% / 5% / 5% in order into train / validation / test.

Layouts under data_dir: ``ptb/{train,valid,test}.txt`` or Mikolov's ``ptb/ptb.{train,valid,test}.txt``;
``wikitext-2/wiki.{train,valid,test}.tokens``; ``tinyshakespeare/input.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import torch

from optbench.data.errors import DatasetNotFoundError, reading

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")

# dataset -> (folder, candidate file-name patterns with {split}, where to get it)
WORD_CORPORA = {
    "ptb": ("ptb", ("{split}.txt", "ptb.{split}.txt"),
            "Get Mikolov's simple-examples.tgz (http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz) "
            "and copy data/ptb.{train,valid,test}.txt there."),
    "wikitext2": ("wikitext-2", ("wiki.{split}.tokens",),
                  "Get wikitext-2-v1.zip (the tokenised version, e.g. from the Hugging Face `wikitext` dataset, "
                  "config wikitext-2-v1) and copy wiki.{train,valid,test}.tokens there."),
}
TINYSHAKESPEARE = ("tinyshakespeare", "input.txt",
                   "Get input.txt from https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt and copy it there.")


class Vocabulary:
    """Token <-> id, ids in order of first addition."""

    def __init__(self, tokens: Iterable[str] = ()):
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for token in tokens:
            self.add(token)

    def add(self, token: str) -> int:
        if token not in self.stoi:
            self.stoi[token] = len(self.itos)
            self.itos.append(token)
        return self.stoi[token]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        unk = self.stoi.get(UNK)
        stoi = self.stoi
        return torch.tensor([stoi.get(t, unk) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]


@dataclass
class Corpus:
    vocab: Vocabulary
    train: torch.Tensor  # int64 [N] token ids
    valid: torch.Tensor
    test: torch.Tensor

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "val": self.valid, "valid": self.valid, "test": self.test}[name]


def word_tokens(path: Path) -> list[str]:
    """Whitespace-split words of every line, each line closed by <eos>."""
    tokens: list[str] = []
    with reading(path, "it must be UTF-8 text"), open(path, encoding="utf-8") as f:
        for line in f:
            tokens.extend(line.split())
            tokens.append(EOS)
    return tokens


def find_word_files(dataset: str, data_dir: str | Path) -> dict[str, Path]:
    if dataset not in WORD_CORPORA:
        raise ValueError(f"unknown word corpus {dataset!r}; valid: {', '.join(WORD_CORPORA)}")
    folder, patterns, how = WORD_CORPORA[dataset]
    base = Path(data_dir).expanduser() / folder
    for pattern in patterns:
        files = {s: base / pattern.format(split=s) for s in SPLITS}
        if all(p.is_file() for p in files.values()):
            return files
    first = {s: base / patterns[0].format(split=s) for s in SPLITS}
    missing = next(p for p in first.values() if not p.is_file())
    alternatives = " or ".join(pattern.format(split="{train,valid,test}") for pattern in patterns)
    raise DatasetNotFoundError(dataset, missing, f"Expected {alternatives} in {base}. {how}")


def load_word_corpus(dataset: str, data_dir: str | Path) -> Corpus:
    files = find_word_files(dataset, data_dir)
    tokens = {s: word_tokens(p) for s, p in files.items()}
    vocab = Vocabulary(tokens["train"])
    if any(t not in vocab for s in ("valid", "test") for t in tokens[s]):
        vocab.add(UNK)
    return Corpus(vocab, *(vocab.encode(tokens[s]) for s in SPLITS))


def char_corpus_path(data_dir: str | Path) -> Path:
    """``<data_dir>/tinyshakespeare/input.txt`` (any plain text in that place is a character corpus)."""
    folder, name, how = TINYSHAKESPEARE
    path = Path(data_dir).expanduser() / folder / name
    if not path.is_file():
        raise DatasetNotFoundError("tinyshakespeare", path, how)
    return path


def load_char_corpus(data_dir: str | Path, fractions: tuple[float, float] = (0.9, 0.05)) -> Corpus:
    """TinyShakespeare: characters, split in order by ``fractions`` (train, valid; test gets the rest)."""
    path = char_corpus_path(data_dir)
    with reading(path, "it must be UTF-8 text"):
        text = path.read_text(encoding="utf-8")
    vocab = Vocabulary(sorted(set(text)))
    ids = vocab.encode(list(text))
    n_train = int(len(ids) * fractions[0])
    n_valid = int(len(ids) * fractions[1])
    return Corpus(vocab, ids[:n_train], ids[n_train:n_train + n_valid], ids[n_train + n_valid:])


def load_corpus(dataset: str, data_dir: str | Path) -> Corpus:
    if dataset == "tinyshakespeare":
        return load_char_corpus(data_dir)
    return load_word_corpus(dataset, data_dir)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[N] -> [batch_size, N // batch_size]: row b is the b-th contiguous segment of the stream (the tail that
    does not fill a column is dropped), so a row continues from one BPTT window to the next."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = len(ids) // batch_size
    if steps < 2:
        raise ValueError(f"{len(ids)} tokens are too few for batch_size={batch_size} (need 2 per row)")
    return ids[: steps * batch_size].view(batch_size, steps)


def window_lengths(total: int, bptt: int, jitter: Optional[torch.Generator] = None,
                   min_length: int = 5) -> list[int]:
    """Lengths of consecutive BPTT windows covering ``total`` next-token targets. Fixed ``bptt``; with a
    generator, AWD-LSTM's variable lengths: bptt (or bptt / 2 with probability 0.05) plus N(0, 5) noise,
    at least ``min_length``. All draws of an epoch are made at once (one host transfer, not one per step)."""
    if jitter is None:
        return [min(bptt, total - start) for start in range(0, total, bptt)]
    most = -(-total // min_length)
    half = torch.rand(most, generator=jitter, device=jitter.device) >= 0.95
    noise = torch.randn(most, generator=jitter, device=jitter.device)
    draws = (torch.where(half, bptt / 2.0, float(bptt)) + 5.0 * noise).tolist()
    lengths, start = [], 0
    for draw in draws:
        if start >= total:
            break
        length = min(max(min_length, int(draw)), total - start)
        lengths.append(length)
        start += length
    return lengths


def bptt_windows(data: torch.Tensor, bptt: int, jitter: Optional[torch.Generator] = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) windows over [batch, T] data: inputs data[:, i:i+L], targets shifted by one token."""
    start = 0
    for length in window_lengths(data.size(1) - 1, bptt, jitter):
        yield data[:, start:start + length], data[:, start + 1:start + 1 + length]
        start += length


def num_windows(data: torch.Tensor, bptt: int) -> int:
    return -(-(data.size(1) - 1) // bptt)
