"""LSTM language models of the YellowFin runs: the PyTorch word-language-model example (embedding -> dropout
-> multi-layer LSTM -> dropout -> linear decoder, optionally tied to the embedding) and its small/char variants.

Language models in optbench take tokens [batch, time] and a recurrent state (None = zeros) and return an
``LMOutput``: logits [batch, time, vocab], the final state (to carry into the next BPTT window), and an optional
regularisation penalty the task adds to the training loss (AWD-LSTM's AR/TAR; None here).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


class LMOutput(NamedTuple):
    logits: torch.Tensor
    state: object
    penalty: Optional[torch.Tensor] = None


def detach_state(state):
    """Cut the graph between BPTT windows: tensors, or (nested) tuples/lists of them, detached; None stays."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 650, hidden: int = 650, layers: int = 2,
                 dropout: float = 0.5, tie_weights: bool = True, init_range: float = 0.1,
                 init_lstm_uniform: bool = False):
        super().__init__()
        if tie_weights and embed_dim != hidden:
            raise ValueError(f"tie_weights=True needs embed_dim == hidden, got {embed_dim} and {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.encoder = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(embed_dim, hidden, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab_size)
        # the example's initialisation: uniform(-0.1, 0.1) embedding and decoder, zero decoder bias;
        # TensorFlow's PTB model (init_lstm_uniform) also draws the LSTM weights from that range
        nn.init.uniform_(self.encoder.weight, -init_range, init_range)
        nn.init.uniform_(self.decoder.weight, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if init_lstm_uniform:
            for p in self.rnn.parameters():
                nn.init.uniform_(p, -init_range, init_range)
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    def forward(self, tokens: torch.Tensor, state: Optional[State] = None) -> LMOutput:
        emb = self.drop(self.encoder(tokens))
        out, state = self.rnn(emb, state)
        return LMOutput(self.decoder(self.drop(out)), state)


def lstm_lm(vocab_size: int, embed_dim: int = 650, hidden: int = 650, layers: int = 2, dropout: float = 0.5,
            tie_weights: bool = True, init_range: float = 0.1, init_lstm_uniform: bool = False) -> LSTMLanguageModel:
    return LSTMLanguageModel(vocab_size, embed_dim, hidden, layers, dropout, tie_weights, init_range,
                             init_lstm_uniform)
