"""Text corpora (PTB, WikiText-2, TinyShakespeare), vocabulary conventions, batchify and BPTT windows."""

import pytest
import torch

from conftest import mini_sentences
from optbench.data.errors import DatasetNotFoundError
from optbench.data.text import (EOS, UNK, batchify, bptt_windows, load_char_corpus, load_corpus, num_windows,
                                window_lengths)


def test_ptb_lines_end_with_eos_and_vocab_follows_first_appearance(mini_text_dir):
    corpus = load_corpus("ptb", mini_text_dir)
    train_lines = (mini_text_dir / "ptb" / "train.txt").read_text().splitlines()
    words = [w for line in train_lines for w in line.split() + [EOS]]
    assert corpus.vocab.decode(corpus.train) == words
    assert corpus.vocab.itos == list(dict.fromkeys(words))  # first appearance order
    assert corpus.train.dtype == torch.int64
    assert corpus.vocab.decode(corpus.valid[:4]) == mini_sentences(1, 1)[0].split()[:4]


def test_mikolov_file_names_are_found(tmp_path, mini_text_dir):
    for split in ("train", "valid", "test"):
        (tmp_path / "ptb").mkdir(exist_ok=True)
        (tmp_path / "ptb" / f"ptb.{split}.txt").write_text((mini_text_dir / "ptb" / f"{split}.txt").read_text())
    a, b = load_corpus("ptb", tmp_path), load_corpus("ptb", mini_text_dir)
    assert a.vocab.itos == b.vocab.itos and torch.equal(a.test, b.test)


def test_words_missing_from_train_become_unk(tmp_path):
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "train.txt").write_text("a b\nb c\n")
    (tmp_path / "ptb" / "valid.txt").write_text("a z\n")
    (tmp_path / "ptb" / "test.txt").write_text("c\n")
    corpus = load_corpus("ptb", tmp_path)
    assert corpus.vocab.itos == ["a", "b", EOS, "c", UNK]
    assert corpus.vocab.decode(corpus.valid) == ["a", UNK, EOS]


def test_wikitext_blank_lines_are_eos_tokens(mini_text_dir):
    corpus = load_corpus("wikitext2", mini_text_dir)
    assert corpus.vocab.decode(corpus.train[:6]) == [EOS, "=", "Heading", "=", EOS, EOS]
    lines = (mini_text_dir / "wikitext-2" / "wiki.test.tokens").read_text().splitlines()
    assert len(corpus.test) == sum(len(line.split()) + 1 for line in lines)


def test_tinyshakespeare_characters_split_90_5_5(mini_text_dir):
    text = (mini_text_dir / "tinyshakespeare" / "input.txt").read_text()
    corpus = load_char_corpus(mini_text_dir)
    assert corpus.vocab.itos == sorted(set(text))
    n = len(text)
    assert (len(corpus.train), len(corpus.valid)) == (int(0.9 * n), int(0.05 * n))
    assert "".join(corpus.vocab.decode(torch.cat([corpus.train, corpus.valid, corpus.test]))) == text


@pytest.mark.parametrize("dataset, expected", [("ptb", "ptb/train.txt"), ("wikitext2", "wikitext-2/wiki.train.tokens"),
                                               ("tinyshakespeare", "tinyshakespeare/input.txt")])
def test_missing_corpus_names_the_path(tmp_path, dataset, expected):
    with pytest.raises(DatasetNotFoundError) as err:
        load_corpus(dataset, tmp_path)
    assert str(tmp_path / expected) in str(err.value)


def test_batchify_rows_are_contiguous_segments():
    data = batchify(torch.arange(23), 4)
    assert data.shape == (4, 5)
    assert data[:, 0].tolist() == [0, 5, 10, 15] and data[1].tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="too few"):
        batchify(torch.arange(5), 4)


@pytest.mark.parametrize("bptt", [1, 3, 7, 40])
def test_bptt_windows_cover_every_target_once(bptt):
    data = batchify(torch.arange(2 * 41), 2)
    windows = list(bptt_windows(data, bptt))
    assert len(windows) == num_windows(data, bptt)
    inputs = torch.cat([x for x, _ in windows], 1)
    targets = torch.cat([y for _, y in windows], 1)
    assert torch.equal(inputs, data[:, :-1]) and torch.equal(targets, data[:, 1:])
    assert all(x.shape == y.shape and x.size(1) <= bptt for x, y in windows)


def test_variable_bptt_lengths_follow_the_generator():
    a = window_lengths(200_000, 70, torch.Generator().manual_seed(0))
    b = window_lengths(200_000, 70, torch.Generator().manual_seed(0))
    c = window_lengths(200_000, 70, torch.Generator().manual_seed(1))
    assert a == b != c
    assert sum(a) == 200_000 and min(a[:-1]) >= 5
    lengths = torch.tensor(a[:-1], dtype=torch.float)
    # mean of int(N(70, 5)) mixed 95/5 with int(N(35, 5)): 0.95 * 70 + 0.05 * 35 - 0.5 (truncation)
    assert abs(lengths.mean().item() - 67.75) < 1.0
    assert (lengths < 50).float().mean().item() == pytest.approx(0.05, abs=0.03)
