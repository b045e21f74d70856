"""Recurrent language models: RNN, LSTM and GRU, each from scratch or from ``torch.nn``.

The scratch cells are the textbook's equations ("Dive into Deep Learning" 9.5, 10.1, 10.2), one
time step each, right below, with parameters named after them (``W_xi``, ``W_hi``, ``b_i``, ...).
``bptt: fused`` (the default of a model section) runs the same equations over a whole sequence
with backpropagation through time written out (rnnlm/bptt.py, the speed path);
``bptt: autograd`` lets autograd differentiate the steps below. With the same weights, scratch
and torch give the same logits (tests/test_models.py copies the weights across).

Shapes follow ``torch.nn``: inputs (batch, time), hidden state (layers, batch, hidden), and for
the LSTM a pair (H, C). B = batch, H = hidden size, V = vocabulary size.

GRU note: ``torch.nn.GRU`` (like cuDNN) applies the reset gate after the hidden matmul,
``H~ = tanh(X W_xh + b_xh + R * (H W_hh + b_hh))``; the book writes ``(R * H) W_hh``. The scratch
GRU uses torch's form so the two implementations are interchangeable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import bptt
from .bptt import INPUT_LAYOUT, LAYOUT
from .params import BPTT, CELLS, IMPLS  # defined once, where params.yaml is checked

GATES = {"rnn": ("h",), "lstm": ("i", "f", "o", "c"), "gru": ("r", "z", "h")}  # W_x<g>, W_h<g>, b_<g>


# --- the equations ------------------------------------------------------------------------
# One time step of each cell. xw = X_t W_x* + b_* for all gates at once, (B, G*H) for G gates;
# W_h = [W_h* ...] side by side, (H, G*H), so each step is one matmul (gate orders: bptt.LAYOUT).
def rnn_step(xw, H, W_h):
    # H: (B, H)
    # H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)
    return torch.tanh(torch.addmm(xw, H, W_h))


def lstm_step(xw, state, W_h):
    H, C = state  # (B, H) each
    n = H.shape[-1]
    # pre-activations [C~ | I | F | O] = X_t W_x* + H_{t-1} W_h* + b_*, all gates in one matmul
    pre = torch.addmm(xw, H, W_h)
    C_tilde = torch.tanh(pre[:, :n])  # C~_t = tanh(X_t W_xc + H_{t-1} W_hc + b_c)
    I, Fg, O = torch.sigmoid(pre[:, n:]).chunk(3, dim=-1)  # I_t, F_t, O_t = sigmoid(...)
    C = Fg * C + I * C_tilde  # C_t = F_t * C_{t-1} + I_t * C~_t
    H = O * torch.tanh(C)  # H_t = O_t * tanh(C_t)
    return H, C


def gru_step(xw, H, W_h, b_hh):
    n = H.shape[-1]  # H: (B, H), b_hh: (H,)
    hw = H @ W_h  # [H W_hr | H W_hz | H W_hh]; xw = [X W_xh + b_h | X W_xr + b_r | X W_xz + b_z]
    # R_t, Z_t = sigmoid(X_t W_x* + H_{t-1} W_h* + b_*)
    R, Z = torch.sigmoid(xw[:, n:] + hw[:, : 2 * n]).chunk(2, dim=-1)
    # candidate state H~_t = tanh(X_t W_xh + b_h + R_t * (H_{t-1} W_hh + b_hh)) (reset after, see module doc)
    H_tilde = torch.tanh(xw[:, :n] + R * (hw[:, 2 * n :] + b_hh))
    return Z * H + (1 - Z) * H_tilde  # H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t


def dropout(x, p: float, training: bool, locked: bool = False):
    """Dropout of x (time, batch, features). ``locked`` (variational dropout, Gal & Ghahramani
    2016; AWD-LSTM's "locked dropout"): one mask per sequence and feature, the same at every time
    step, so a unit dropped for a sequence stays dropped along it."""
    if not locked or not training or p == 0:
        return F.dropout(x, p, training)
    mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - p)
    return x * mask / (1 - p)


class ScratchLayer(nn.Module):
    """One recurrent layer; parameters W_x<g> (input x hidden), W_h<g> (hidden x hidden), b_<g>.

    ``ids_input=True`` means the layer reads token ids (one-hot inputs of size ``input_size``):
    X_t W_x is then a row lookup.

    ``bptt`` picks how gradients are computed: ``"fused"`` runs the time loop in an autograd
    Function whose backward is backpropagation through time written out (rnnlm/bptt.py);
    ``"autograd"`` loops over the ``<cell>_step`` equations above and lets autograd differentiate
    them (slower; also works for double backward). Both give the same numbers up to rounding.
    """

    def __init__(self, cell: str, input_size: int, hidden: int, ids_input: bool = False, bptt: str = "fused"):
        super().__init__()
        self.cell, self.hidden, self.ids_input, self.bptt = cell, hidden, ids_input, bptt
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
        order = LAYOUT[self.cell] if prefix == "W_h" else INPUT_LAYOUT[self.cell]
        return torch.cat([getattr(self, f"{prefix}{g}") for g in order], dim=-1)

    def forward(self, inputs: torch.Tensor, state):
        """inputs: (T, B) ids or (T, B, input_size) floats; state: H or (H, C), each (B, hidden).

        Returns outputs (T, B, hidden) and the new state."""
        W_x, W_h, b = self._stack("W_x"), self._stack("W_h"), self._stack("b_")
        if self.ids_input:
            # one_hot(x) W_x + b is row x of the table W_x + b: a lookup, no V-wide matmul
            source, ids = W_x + b, inputs
        else:
            # X_t W_x + b for every t at once, one matmul
            source, ids = torch.addmm(b, inputs.flatten(0, 1), W_x).view(*inputs.shape[:2], -1), None
        if self.bptt == "fused":
            # The time loops compute in the parameters' dtype; under autocast (train.precision: bf16)
            # the input projection above comes out in bfloat16, so it is cast back here.
            source = source.to(W_h.dtype)
            if self.cell == "lstm":
                outputs, C = bptt.LSTMThroughTime.apply(source, ids, W_h, state[0], state[1])
                return outputs, (outputs[-1], C)
            if self.cell == "gru":
                outputs = bptt.GRUThroughTime.apply(source, ids, W_h, self.b_hh, state)
            else:
                outputs = bptt.RNNThroughTime.apply(source, ids, W_h, state)
            return outputs, outputs[-1]
        XW = source if ids is None else F.embedding(ids, source)
        outputs = []
        for xw in XW.unbind(0):
            if self.cell == "lstm":
                state = lstm_step(xw, state, W_h)
            elif self.cell == "gru":
                state = gru_step(xw, state, W_h, self.b_hh)
            else:
                state = rnn_step(xw, state, W_h)
            outputs.append(state[0] if self.cell == "lstm" else state)
        return torch.stack(outputs), state


class ScratchRecurrent(nn.Module):
    """A stack of ScratchLayers with dropout between layers, mirroring nn.RNN/LSTM/GRU
    (``locked``: one dropout mask per sequence, see :func:`dropout`)."""

    def __init__(self, cell, input_size, hidden, layers, dropout, ids_input=False, bptt="fused", locked=False):
        super().__init__()
        self.cell, self.p, self.locked = cell, dropout, locked
        self.layers = nn.ModuleList(
            ScratchLayer(cell, input_size if i == 0 else hidden, hidden, ids_input and i == 0, bptt)
            for i in range(layers)
        )

    def forward(self, inputs, state):
        x, new = inputs, []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = dropout(x, self.p, self.training, self.locked)
            x, s = layer(x, (state[0][i], state[1][i]) if self.cell == "lstm" else state[i])
            new.append(s)
        if self.cell == "lstm":  # [(H, C) of each layer] -> (H, C), each (layers, batch, hidden)
            return x, tuple(torch.stack(z) for z in zip(*new))
        return x, torch.stack(new)


class LanguageModel(nn.Module):
    """What every model here shares: token ids in, next-token scores out, and a state carried from
    one call to the next, so a long text can be read in pieces. A subclass defines ``features``
    (ids (batch, time) -> last-layer outputs (time, batch, hidden) and the new state) and
    ``begin_state``; the output layer is here: a linear decoder (``softmax: full``), optionally
    sharing the embedding matrix (``tie_weights``, Press & Wolf 2017), or an adaptive softmax
    (``softmax: adaptive``, Grave et al. 2017: ``nn.AdaptiveLogSoftmaxWithLoss``) whose cost at
    10k+ words is a fraction of the full one."""

    activation_loss = None  # a training forward pass may set it: a term train.train_step adds to the loss

    def init_output(self, hidden: int, vocab_size: int, softmax: str, cutoffs: list[int], tie_weights: bool):
        if softmax == "adaptive":
            self.decoder = None
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab_size, cutoffs, div_value=4.0)
        else:
            self.adaptive = None
            self.decoder = nn.Linear(hidden, vocab_size)
            if tie_weights:
                self.decoder.weight = self.embedding.weight

    def forward(self, X: torch.Tensor, state=None):
        """X: (batch, time) token ids. Returns scores (batch, time, vocab) whose softmax is the
        next-token distribution (logits; log-probabilities for the adaptive softmax) and the final state."""
        outputs, state = self.features(X, state)
        if self.adaptive is not None:
            T, B, H = outputs.shape
            with torch.autocast(outputs.device.type, enabled=False):
                scores = self.adaptive.log_prob(_at_least_float32(outputs.reshape(T * B, H))).reshape(T, B, -1)
        else:
            scores = self.decoder(outputs)
        return scores.transpose(0, 1), state

    def token_nll(self, X: torch.Tensor, Y: torch.Tensor, state=None):
        """Negative log-likelihood (nats, float32) of each target: (batch, time), and the final state.

        The adaptive softmax scores only the targets' clusters, so this is cheaper than ``forward``."""
        outputs, state = self.features(X, state)
        return self.output_nll(outputs, Y), state

    def output_nll(self, outputs: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """:meth:`token_nll` from the last layer's outputs (time, batch, hidden): (batch, time)."""
        targets = Y.T.reshape(-1).long()
        if self.adaptive is not None:  # float32 even under autocast: its index_copy_ mixes dtypes otherwise
            with torch.autocast(outputs.device.type, enabled=False):
                out = self.adaptive(_at_least_float32(outputs.reshape(-1, outputs.shape[-1])), targets)
            nll = -out.output
        else:
            logits = _at_least_float32(self.decoder(outputs))
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
        return nll.reshape(Y.shape[1], Y.shape[0]).T


class RNNLM(LanguageModel):
    """Embedding (or one-hot) -> dropout -> recurrent layers -> dropout -> the output layer
    (:class:`LanguageModel`; ``tie_weights`` needs embedding == hidden). ``dropout`` applies to the
    embeddings, between layers and to the outputs.

    The regularisers of AWD-LSTM (Merity, Keskar & Socher 2017), active in training only:
    ``weight_drop`` drops hidden-to-hidden weights (DropConnect on every W_h; the torch cells keep
    their fused kernel: the dropped matrices go in as the kernel's weights); ``embedding_dropout``
    drops whole rows of the embedding matrix, i.e. every occurrence of a token type in a batch
    (Gal & Ghahramani 2016); both scale what they keep by 1 / (1 - p). ``locked_dropout`` makes
    every ``dropout`` above variational (:func:`dropout`). ``ar`` and ``tar`` set
    :attr:`activation_loss`, which training adds to the loss: activation regularisation
    ``ar * mean(o_t^2)`` on the last layer's outputs after dropout, and temporal activation
    regularisation ``tar * mean((h_t - h_{t-1})^2)`` on them before it.
    """

    def __init__(
        self,
        cell: str,
        impl: str,
        vocab_size: int,
        hidden: int = 256,
        layers: int = 1,
        dropout: float = 0.0,
        embedding: int = 32,
        tie_weights: bool = False,
        softmax: str = "full",
        cutoffs: tuple[int, ...] | list[int] = (),
        bptt: str = "fused",
        weight_drop: float = 0.0,
        embedding_dropout: float = 0.0,
        locked_dropout: bool = False,
        ar: float = 0.0,
        tar: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}")
        if bptt not in BPTT:
            raise ValueError(f"unknown bptt {bptt!r}")
        if tie_weights and (embedding != hidden or softmax != "full"):
            raise ValueError("tie_weights needs embedding == hidden and softmax 'full'")
        cutoffs = output_cutoffs(softmax, cutoffs, vocab_size)
        self.config = dict(
            cell=cell,
            impl=impl,
            vocab_size=vocab_size,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            embedding=embedding,
            tie_weights=tie_weights,
            softmax=softmax,
            cutoffs=cutoffs,
            bptt=bptt,
            weight_drop=weight_drop,
            embedding_dropout=embedding_dropout,
            locked_dropout=locked_dropout,
            ar=ar,
            tar=tar,
        )
        self.cell, self.impl, self.vocab_size = cell, impl, vocab_size
        self.hidden, self.num_layers = hidden, layers
        self.weight_drop, self.embedding_dropout = weight_drop, embedding_dropout
        self.p, self.locked, self.ar, self.tar = dropout, locked_dropout, ar, tar
        self.embedding = nn.Embedding(vocab_size, embedding) if embedding > 0 else None
        input_size = embedding if embedding > 0 else vocab_size
        inter = dropout if layers > 1 else 0.0
        if impl == "torch":
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
            # locked dropout between layers is applied here, running the layers one by one (features)
            self.rnn = cls(input_size, hidden, num_layers=layers, dropout=0.0 if locked_dropout else inter)
        else:
            self.rnn = ScratchRecurrent(
                cell, input_size, hidden, layers, inter, ids_input=embedding == 0, bptt=bptt, locked=locked_dropout
            )
        self.init_output(hidden, vocab_size, softmax, cutoffs, tie_weights)

    def begin_state(self, batch_size: int, device=None):
        dtype = next(self.parameters()).dtype
        h = torch.zeros(self.num_layers, batch_size, self.hidden, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def features(self, X: torch.Tensor, state=None):
        """X: (batch, time) token ids. Returns the last layer's outputs (time, batch, hidden), after
        dropout, and the final state."""
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        ids = X.T.long()  # time-major inside; token arrays are int32 (compact), indices int64
        if self.embedding is not None:
            inputs = self.drop(F.embedding(ids, self._embedding_weights()))
        elif self.impl == "scratch":
            inputs = ids  # one-hot handled as a row lookup in the first layer
        else:
            inputs = F.one_hot(ids, self.vocab_size).to(next(self.parameters()).dtype)
        weights = dict(self.rnn.named_parameters())
        if self.weight_drop and self.training:  # DropConnect on the hidden-to-hidden weights (W_h)
            weights.update({n: F.dropout(p, self.weight_drop) for n, p in weights.items() if _recurrent(n)})
        if self.locked and self.training and self.impl == "torch" and self.num_layers > 1:
            outputs, state = self._torch_layers(inputs, state, weights)
        elif self.weight_drop and self.training:
            outputs, state = torch.func.functional_call(self.rnn, weights, (inputs, state))
        else:
            outputs, state = self.rnn(inputs, state)
        dropped = self.drop(outputs)
        self.activation_loss = self._activation_loss(outputs, dropped) if self.training else None
        return dropped, state

    def _activation_loss(self, outputs, dropped):
        """AR + TAR of the last layer's outputs (time, batch, hidden), or None when both are off."""
        terms = []
        if self.ar:  # activation regularisation: large outputs cost (after dropout)
            terms.append(self.ar * dropped.pow(2).mean())
        if self.tar and len(outputs) > 1:  # temporal: outputs that jump from step to step cost (before dropout)
            terms.append(self.tar * (outputs[1:] - outputs[:-1]).pow(2).mean())
        return sum(terms) if terms else None

    def drop(self, x):
        return dropout(x, self.p, self.training, self.locked)

    def _torch_layers(self, inputs, state, weights):
        """``self.rnn`` (nn.RNN/LSTM/GRU) run one layer at a time, with ``weights`` and locked
        dropout between layers: the same kernel as nn.Module's forward, called per layer."""
        kernel = {"rnn": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}[self.cell]
        x, new = inputs, []
        for i in range(self.num_layers):
            layer = [weights[f"{k}_l{i}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = (state[0][i : i + 1], state[1][i : i + 1]) if self.cell == "lstm" else state[i : i + 1]
            # (input, state, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
            x, *s = kernel(self.drop(x) if i else x, h, layer, True, 1, 0.0, True, False, False)
            new.append(s)
        if self.cell == "lstm":
            return x, tuple(torch.cat(z) for z in zip(*new))
        return x, torch.cat([s[0] for s in new])

    def _embedding_weights(self) -> torch.Tensor:
        W = self.embedding.weight
        if not (self.embedding_dropout and self.training):
            return W
        keep = torch.empty(W.shape[0], 1, device=W.device, dtype=W.dtype).bernoulli_(1 - self.embedding_dropout)
        return W * keep / (1 - self.embedding_dropout)  # a dropped row: that token type is zero everywhere


def _recurrent(name: str) -> bool:
    """Whether a parameter of nn.RNN/LSTM/GRU or ScratchRecurrent is a hidden-to-hidden matrix."""
    return name.startswith("weight_hh") or ".W_h" in name


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bfloat16/float16 (autocast) -> float32; float32 and float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def output_cutoffs(softmax: str, cutoffs, vocab_size: int) -> list[int]:
    """The adaptive softmax's cluster bounds ([] for a full softmax): the given ones, or by default
    a head of the 2,000 most frequent tokens (ids are frequency-ordered), then 10,000, for
    vocabularies large enough to gain from them."""
    if softmax != "adaptive":
        return []
    return list(cutoffs) or default_cutoffs(vocab_size)


def default_cutoffs(vocab_size: int) -> list[int]:
    return [c for c in (2000, 10000) if c < vocab_size - 1] or [max(1, vocab_size // 2)]


def build(config: dict) -> LanguageModel:
    """The model a config describes: a params section's keys with ``vocab_size``, or a checkpoint's ``model_config``."""
    if config["cell"] == "transformer":
        from .transformer import TransformerLM  # it builds on this module

        return TransformerLM(**config)
    return RNNLM(**config)


def detach_state(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
