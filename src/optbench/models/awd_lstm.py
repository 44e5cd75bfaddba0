"""AWD-LSTM (Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models", 2018), the model of
AggMo's language-modelling runs: 3 LSTM layers (400 -> 1150 -> 1150 -> 400), tied 400-d embedding/decoder,
DropConnect on the hidden-to-hidden weights, embedding dropout (whole words), variational ("locked") dropout
on the input, between layers and on the output, and activation (AR) / temporal activation (TAR) regularisation.

Weight drop without the original flatten_parameters hack: each layer is a plain one-layer ``nn.LSTM`` that
owns the raw ``weight_hh_l0``; in training the forward pass calls it through ``torch.func.functional_call``
with a dropped copy of that weight, so the parameter, its name in the state dict and its gradient stay the
ordinary ones. Speed cost: on CUDA the dropped weight is not part of cuDNN's flat weight buffer, so cuDNN
copies the layer's weights into a contiguous buffer at every call (a few MB per layer, small next to the
matmuls); evaluation uses the fused path unchanged.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from optbench.models.lstm import LMOutput


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout on [batch, time, features]: one mask per sequence, shared over time."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask


def embedding_dropout(embed: nn.Embedding, tokens: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole words: zero rows of the embedding matrix (rescaling the others), then look up."""
    weight = embed.weight
    if training and p > 0.0:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p).div_(1.0 - p)
        weight = weight * mask
    return F.embedding(tokens, weight)


class WeightDropLSTM(nn.Module):
    """One LSTM layer with DropConnect (probability ``weight_dropout``) on its hidden-to-hidden weights,
    one mask per forward call (i.e. per BPTT window), shared by every time step and sequence."""

    def __init__(self, input_size: int, hidden_size: int, weight_dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, 1, batch_first=True)
        self.weight_dropout = weight_dropout

    def forward(self, x: torch.Tensor, state=None):
        if not self.training or self.weight_dropout == 0.0:
            return self.lstm(x, state)
        weight = self.lstm.weight_hh_l0
        # DropConnect mask: keep with probability 1 - p, rescale by 1 / (1 - p) (as F.dropout, whose CPU
        # bernoulli_ is about twice as slow as this on a 4600 x 1150 matrix)
        mask = torch.rand_like(weight).ge_(self.weight_dropout).div_(1.0 - self.weight_dropout)
        dropped = weight * mask
        with warnings.catch_warnings():  # cuDNN's "weights are not part of single contiguous chunk" notice
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            return functional_call(self.lstm, {"weight_hh_l0": dropped}, (x, state))


class AWDLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 400, hidden: int = 1150, layers: int = 3,
                 dropout: float = 0.4, dropouth: float = 0.25, dropouti: float = 0.4, dropoute: float = 0.1,
                 wdrop: float = 0.5, tie_weights: bool = True, ar_alpha: float = 2.0, tar_beta: float = 1.0):
        super().__init__()
        for name, p in dict(dropout=dropout, dropouth=dropouth, dropouti=dropouti, dropoute=dropoute,
                            wdrop=wdrop).items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.vocab_size = vocab_size
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta
        self.encoder = nn.Embedding(vocab_size, embed_dim)
        # the last layer's width is the embedding size when the decoder is tied to the embedding
        sizes: Sequence[int] = [embed_dim] + [hidden] * (layers - 1) + [embed_dim if tie_weights else hidden]
        self.rnns = nn.ModuleList(WeightDropLSTM(a, b, wdrop) for a, b in zip(sizes[:-1], sizes[1:]))
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens: torch.Tensor, state: Optional[list] = None) -> LMOutput:
        x = embedding_dropout(self.encoder, tokens, self.dropoute, self.training)
        x = locked_dropout(x, self.dropouti, self.training)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            raw, layer_state = rnn(x, None if state is None else state[i])
            new_state.append(layer_state)
            last = i == len(self.rnns) - 1
            x = locked_dropout(raw, self.dropout if last else self.dropouth, self.training)
        penalty = None
        if self.training and (self.ar_alpha or self.tar_beta):
            # AR on the dropped output of the last layer, TAR on its raw output (as in Merity et al.)
            penalty = self.ar_alpha * x.pow(2).mean()
            if raw.size(1) > 1:
                penalty = penalty + self.tar_beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
        return LMOutput(self.decoder(x), new_state, penalty)


def awd_lstm(vocab_size: int, embed_dim: int = 400, hidden: int = 1150, layers: int = 3, dropout: float = 0.4,
             dropouth: float = 0.25, dropouti: float = 0.4, dropoute: float = 0.1, wdrop: float = 0.5,
             tie_weights: bool = True, ar_alpha: float = 2.0, tar_beta: float = 1.0) -> AWDLSTM:
    return AWDLSTM(vocab_size, embed_dim, hidden, layers, dropout, dropouth, dropouti, dropoute, wdrop,
                   tie_weights, ar_alpha, tar_beta)
