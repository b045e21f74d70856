"""Recurrent language models: RNN, LSTM and GRU, each from scratch or from ``torch.nn``.

The scratch cells are the textbook's equations ("Dive into Deep Learning", ch. 9-10), with
parameters named after them. Two things make them fast without changing the maths:

* one-hot inputs: ``one_hot(x) @ W_xh`` selects row ``x`` of ``W_xh``, so it is computed as
  an embedding lookup (``F.embedding(x, W_xh)``) -- the same numbers, no V-wide matmul;
* the input projections ``X_t W_x*`` of all time steps are one matmul before the time loop,
  and the gates' hidden projections ``H_{t-1} W_h*`` are one matmul per step, on the
  gate matrices laid side by side.

Shapes follow ``torch.nn``: inputs (batch, time), hidden state (layers, batch, hidden), and
for the LSTM a pair (H, C). With the same weights, scratch and torch give the same logits
(tests/test_models.py copies the weights across).

GRU note: ``torch.nn.GRU`` (like cuDNN) applies the reset gate after the hidden matmul,
``H~ = tanh(X W_xh + b_xh + R * (H W_hh + b_hh))``; the book writes ``(R * H) W_hh``. The
scratch GRU uses torch's form so the two implementations are interchangeable.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CELLS = ("rnn", "lstm", "gru")
IMPLS = ("scratch", "torch")
GATES = {"rnn": ("h",), "lstm": ("i", "f", "o", "c"), "gru": ("r", "z", "h")}


class ScratchLayer(nn.Module):
    """One recurrent layer; parameters W_x<g> (input x hidden), W_h<g> (hidden x hidden), b_<g>.

    ``ids_input=True`` means the layer reads token ids (one-hot inputs of size ``input_size``):
    X_t W_x is then a row lookup.
    """

    def __init__(self, cell: str, input_size: int, hidden: int, ids_input: bool = False):
        super().__init__()
        self.cell, self.hidden, self.ids_input = cell, hidden, ids_input
        self.gates = GATES[cell]
        bound = 1.0 / math.sqrt(hidden)

        def param(*shape):
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        for g in self.gates:
            setattr(self, f"W_x{g}", param(input_size, hidden))
            setattr(self, f"W_h{g}", param(hidden, hidden))
            setattr(self, f"b_{g}", param(hidden))
        if cell == "gru":  # bias inside the reset product of the candidate state (torch's b_hn)
            self.b_hh = param(hidden)

    def _stack(self, prefix):
        return torch.cat([getattr(self, f"{prefix}{g}") for g in self.gates], dim=-1)

    def forward(self, inputs: torch.Tensor, state):
        """inputs: (T, B) ids or (T, B, input_size) floats; state: H or (H, C), each (B, hidden).

        Returns outputs (T, B, hidden) and the new state."""
        W_x, W_h, b = self._stack("W_x"), self._stack("W_h"), self._stack("b_")
        # X_t W_x + b for every t at once; for one-hot inputs this is a row lookup.
        XW = F.embedding(inputs, W_x) + b if self.ids_input else inputs @ W_x + b
        step = getattr(self, f"_{self.cell}_step")
        outputs = []
        for t in range(XW.shape[0]):
            state = step(XW[t], state, W_h)
            outputs.append(state[0] if self.cell == "lstm" else state)
        return torch.stack(outputs), state

    def _rnn_step(self, xw, H, W_h):
        # H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)
        return torch.tanh(xw + H @ W_h)

    def _lstm_step(self, xw, state, W_h):
        H, C = state
        # I_t = s(X_t W_xi + H W_hi + b_i), F_t = s(... f), O_t = s(... o), C~_t = tanh(... c)
        I, Fg, O, C_tilde = (xw + H @ W_h).chunk(4, dim=-1)
        I, Fg, O, C_tilde = torch.sigmoid(I), torch.sigmoid(Fg), torch.sigmoid(O), torch.tanh(C_tilde)
        C = Fg * C + I * C_tilde  # C_t = F_t * C_{t-1} + I_t * C~_t
        H = O * torch.tanh(C)  # H_t = O_t * tanh(C_t)
        return H, C

    def _gru_step(self, xw, H, W_h):
        xr, xz, xh = xw.chunk(3, dim=-1)
        hr, hz, hh = (H @ W_h).chunk(3, dim=-1)
        R = torch.sigmoid(xr + hr)  # R_t = s(X_t W_xr + H W_hr + b_r)
        Z = torch.sigmoid(xz + hz)  # Z_t = s(X_t W_xz + H W_hz + b_z)
        H_tilde = torch.tanh(xh + R * (hh + self.b_hh))  # candidate state (reset after, see module doc)
        return Z * H + (1 - Z) * H_tilde  # H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t


class ScratchRecurrent(nn.Module):
    """A stack of ScratchLayers with dropout between layers, mirroring nn.RNN/LSTM/GRU."""

    def __init__(self, cell, input_size, hidden, layers, dropout, ids_input=False):
        super().__init__()
        self.cell = cell
        self.layers = nn.ModuleList(
            ScratchLayer(cell, input_size if i == 0 else hidden, hidden, ids_input and i == 0) for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs, state):
        new_h, new_c = [], []
        x = inputs
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            s = (state[0][i], state[1][i]) if self.cell == "lstm" else state[i]
            x, s = layer(x, s)
            if self.cell == "lstm":
                new_h.append(s[0])
                new_c.append(s[1])
            else:
                new_h.append(s)
        if self.cell == "lstm":
            return x, (torch.stack(new_h), torch.stack(new_c))
        return x, torch.stack(new_h)


class RNNLM(nn.Module):
    """Embedding (or one-hot) -> recurrent layers -> dropout -> linear decoder over the vocabulary."""

    def __init__(self, cell: str, impl: str, vocab_size: int, hidden: int = 256, layers: int = 1,
                 dropout: float = 0.0, embedding: int = 32):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}")
        self.config = dict(cell=cell, impl=impl, vocab_size=vocab_size, hidden=hidden, layers=layers,
                           dropout=dropout, embedding=embedding)
        self.cell, self.impl, self.vocab_size = cell, impl, vocab_size
        self.hidden, self.num_layers = hidden, layers
        self.embedding = nn.Embedding(vocab_size, embedding) if embedding > 0 else None
        input_size = embedding if embedding > 0 else vocab_size
        self.drop = nn.Dropout(dropout)
        inter = dropout if layers > 1 else 0.0
        if impl == "torch":
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
            self.rnn = cls(input_size, hidden, num_layers=layers, dropout=inter)
        else:
            self.rnn = ScratchRecurrent(cell, input_size, hidden, layers, inter, ids_input=embedding == 0)
        self.decoder = nn.Linear(hidden, vocab_size)

    def begin_state(self, batch_size: int, device=None):
        h = torch.zeros(self.num_layers, batch_size, self.hidden, device=device, dtype=self.decoder.weight.dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, X: torch.Tensor, state=None):
        """X: (batch, time) token ids. Returns logits (batch, time, vocab) and the final state."""
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        ids = X.T  # time-major inside
        if self.embedding is not None:
            inputs = self.drop(self.embedding(ids))
        elif self.impl == "scratch":
            inputs = ids  # one-hot handled as a row lookup in the first layer
        else:
            inputs = F.one_hot(ids, self.vocab_size).to(self.decoder.weight.dtype)
        outputs, state = self.rnn(inputs, state)
        logits = self.decoder(self.drop(outputs))
        return logits.transpose(0, 1), state


def detach_state(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def copy_torch_to_scratch(torch_model: RNNLM, scratch_model: RNNLM) -> None:
    """Copy a torch-impl model's weights into a scratch-impl one of the same config."""
    with torch.no_grad():
        if torch_model.embedding is not None:
            scratch_model.embedding.weight.copy_(torch_model.embedding.weight)
        scratch_model.decoder.load_state_dict(torch_model.decoder.state_dict())
        gates = GATES[torch_model.cell]
        H = torch_model.hidden
        # torch's gate order in weight_ih / weight_hh rows
        torch_order = {"rnn": ("h",), "lstm": ("i", "f", "c", "o"), "gru": ("r", "z", "h")}[torch_model.cell]
        for l, layer in enumerate(scratch_model.rnn.layers):
            w_ih = getattr(torch_model.rnn, f"weight_ih_l{l}")
            w_hh = getattr(torch_model.rnn, f"weight_hh_l{l}")
            b_ih = getattr(torch_model.rnn, f"bias_ih_l{l}")
            b_hh = getattr(torch_model.rnn, f"bias_hh_l{l}")
            for k, g in enumerate(torch_order):
                rows = slice(k * H, (k + 1) * H)
                getattr(layer, f"W_x{g}").copy_(w_ih[rows].T)
                getattr(layer, f"W_h{g}").copy_(w_hh[rows].T)
                if torch_model.cell == "gru" and g == "h":
                    getattr(layer, f"b_{g}").copy_(b_ih[rows])
                    layer.b_hh.copy_(b_hh[rows])
                else:
                    getattr(layer, f"b_{g}").copy_(b_ih[rows] + b_hh[rows])
        assert set(gates) == set(torch_order)
