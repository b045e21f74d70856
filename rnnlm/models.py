"""Recurrent language models: RNN, LSTM and GRU, each from scratch or from ``torch.nn``.

The scratch cells are the textbook's equations ("Dive into Deep Learning", ch. 9-10), with
parameters named after them. These things make them fast without changing the maths
(bench/throughput.py measures them against the book's formulation):

* one-hot inputs: ``one_hot(x) @ W_xh + b`` is row ``x`` of ``W_xh + b``, so it is a row
  lookup -- the same numbers, no V-wide matmul;
* the input projections ``X_t W_x*`` of all time steps are one matmul before the time loop,
  and the gates' hidden projections ``H_{t-1} W_h*`` are one matmul per step, on the
  gate matrices laid side by side;
* backpropagation through time is written out (d2l 9.7) instead of left to autograd: one
  autograd node for the whole sequence, per step one matmul and a few elementwise products,
  and the gradient of ``W_h`` summed over the steps in one matmul (``ScratchLayer.bptt``;
  ``"autograd"`` differentiates the step equations instead, same numbers up to rounding).

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
from torch.autograd.function import once_differentiable

CELLS = ("rnn", "lstm", "gru")
IMPLS = ("scratch", "torch")
GATES = {"rnn": ("h",), "lstm": ("i", "f", "o", "c"), "gru": ("r", "z", "h")}
# Gate order of the stacked matrices [W_x<g> ...], [W_h<g> ...], [b_<g> ...] inside a layer.
# LSTM: the candidate first, so one tanh covers [C~] and one sigmoid covers [I | F | O].
LAYOUT = {"rnn": ("h",), "lstm": ("c", "i", "f", "o"), "gru": ("r", "z", "h")}


class ScratchLayer(nn.Module):
    """One recurrent layer; parameters W_x<g> (input x hidden), W_h<g> (hidden x hidden), b_<g>.

    ``ids_input=True`` means the layer reads token ids (one-hot inputs of size ``input_size``):
    X_t W_x is then a row lookup.

    ``bptt`` (a class attribute) picks how gradients are computed: ``"fused"`` runs the time loop
    in an autograd Function whose backward is backpropagation through time written out (see
    _LSTMThroughTime and its siblings below); ``"autograd"`` loops over the ``_<cell>_step``
    equations and lets autograd differentiate them (slower; also works for double backward).
    Both give the same numbers up to float rounding.
    """

    bptt = "fused"  # or "autograd"

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
        return torch.cat([getattr(self, f"{prefix}{g}") for g in LAYOUT[self.cell]], dim=-1)

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
            if self.cell == "lstm":
                outputs, C = _LSTMThroughTime.apply(source, ids, W_h, state[0], state[1])
                return outputs, (outputs[-1], C)
            if self.cell == "gru":
                outputs = _GRUThroughTime.apply(source, ids, W_h, self.b_hh, state)
            else:
                outputs = _RNNThroughTime.apply(source, ids, W_h, state)
            return outputs, outputs[-1]
        XW = source if ids is None else F.embedding(ids, source)
        step = getattr(self, f"_{self.cell}_step")
        outputs = []
        for xw in XW.unbind(0):
            state = step(xw, state, W_h)
            outputs.append(state[0] if self.cell == "lstm" else state)
        return torch.stack(outputs), state

    # The equations, one time step each; xw = X_t W_x + b (all gates, in LAYOUT order).
    def _rnn_step(self, xw, H, W_h):
        # H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)
        return torch.tanh(torch.addmm(xw, H, W_h))

    def _lstm_step(self, xw, state, W_h):
        H, C = state
        n = self.hidden
        # pre-activations [C~ | I | F | O] = X_t W_x* + H_{t-1} W_h* + b_*, all gates in one matmul
        pre = torch.addmm(xw, H, W_h)
        C_tilde = torch.tanh(pre[:, :n])  # C~_t = tanh(X_t W_xc + H_{t-1} W_hc + b_c)
        I, Fg, O = torch.sigmoid(pre[:, n:]).chunk(3, dim=-1)  # I_t, F_t, O_t = sigmoid(...)
        C = Fg * C + I * C_tilde  # C_t = F_t * C_{t-1} + I_t * C~_t
        H = O * torch.tanh(C)  # H_t = O_t * tanh(C_t)
        return H, C

    def _gru_step(self, xw, H, W_h):
        n = self.hidden
        hw = H @ W_h  # [H W_hr | H W_hz | H W_hh]
        # R_t, Z_t = sigmoid(X_t W_x* + H_{t-1} W_h* + b_*)
        R, Z = torch.sigmoid(xw[:, : 2 * n] + hw[:, : 2 * n]).chunk(2, dim=-1)
        # candidate state H~_t = tanh(X_t W_xh + b_h + R_t * (H_{t-1} W_hh + b_hh)) (reset after, see module doc)
        H_tilde = torch.tanh(xw[:, 2 * n :] + R * (hw[:, 2 * n :] + self.b_hh))
        return Z * H + (1 - Z) * H_tilde  # H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t


# --- backpropagation through time, written out ------------------------------------------------
# Each Function below runs the equations of its _<cell>_step over all time steps, keeping the
# activations; its backward walks the steps in reverse (d2l 9.7). Per step that is one matmul,
# dH_{t-1} = dPre_t W_h^T (+ dOut_{t-1}), and a few elementwise products giving dPre_t, the
# gradient of the step's pre-activations; the gradient of W_h, sum_t H_{t-1}^T dPre_t, is one
# matmul over all steps at the end. Autograd, by comparison, records ~15 nodes per step and
# computes the W_h gradient step by step. The input side X_t W_x + b comes in as ``source``:
# XW for all steps (its gradient is dPre), or for one-hot inputs the table W_x + b with the
# token ids (its gradient: dPre summed per id). sigmoid' and tanh' come from the outputs
# s = sigmoid(x), y = tanh(x): sigmoid_backward(g, s) = g s (1 - s), tanh_backward(g, y) = g (1 - y^2).
_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _num_steps(source, ids):
    return source.shape[0] if ids is None else ids.shape[0]


def _input_rows(out, source, ids, t):
    """out <- X_t W_x + b: step t of XW, or rows ids[t] of the table W_x + b."""
    if ids is None:
        return out.copy_(source[t])
    return torch.index_select(source, 0, ids[t], out=out)


def _input_grad(dPre, source, ids):
    """Gradient of ``source`` given dPre = d(X_t W_x + b) for every step."""
    if ids is None:
        return dPre
    return torch.zeros_like(source).index_add_(0, ids.flatten(), dPre.flatten(0, 1))


def _weight_grad(H0, outputs, dPre):
    """dW_h = sum_t H_{t-1}^T dPre_t (H_{-1} = H0): one matmul over the steps, one for t = 0."""
    n = H0.shape[-1]
    dW = torch.mm(outputs[:-1].reshape(-1, n).t(), dPre[1:].reshape(-1, dPre.shape[-1]))
    return dW.addmm_(H0.t(), dPre[0])


def _grad_or_zeros(grad, like):
    return torch.zeros_like(like) if grad is None else grad.contiguous()


class _RNNThroughTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, source, ids, W_h, H0):
        outputs = H0.new_empty(_num_steps(source, ids), *H0.shape)
        H = H0
        for t in range(outputs.shape[0]):
            # H_t = tanh(X_t W_xh + b_h + H_{t-1} W_hh)
            H = _input_rows(outputs[t], source, ids, t).addmm_(H, W_h).tanh_()
        ctx.save_for_backward(source, ids, W_h, H0, outputs)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, dOut):
        source, ids, W_h, H0, outputs = ctx.saved_tensors
        dOut = _grad_or_zeros(dOut, outputs)
        W_hT = W_h.t().contiguous()
        dPre = torch.empty_like(outputs)
        dH = dOut[-1]
        for t in range(outputs.shape[0] - 1, -1, -1):
            _tanh_backward(dH, outputs[t], grad_input=dPre[t])  # dPre_t = dH_t (1 - H_t^2)
            dH = torch.addmm(dOut[t - 1], dPre[t], W_hT) if t else torch.mm(dPre[t], W_hT)  # dH_{t-1}
        return _input_grad(dPre, source, ids), None, _weight_grad(H0, outputs, dPre), dH


class _LSTMThroughTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, source, ids, W_h, H0, C0):
        T, (B, n) = _num_steps(source, ids), H0.shape
        acts = H0.new_empty(T, B, 4 * n)  # [C~ | I | F | O] of every step
        Cs = H0.new_empty(T + 1, B, n)  # C0, then C_t of every step
        tanh_C = H0.new_empty(T, B, n)
        outputs = H0.new_empty(T, B, n)
        Cs[0] = C0
        H = H0
        for t in range(T):
            a = _input_rows(acts[t], source, ids, t).addmm_(H, W_h)  # X_t W_x* + b_* + H_{t-1} W_h*
            C_tilde, I, Fg, O = a.chunk(4, dim=1)
            C_tilde.tanh_()  # C~_t = tanh(...)
            a[:, n:].sigmoid_()  # I_t, F_t, O_t = sigmoid(...)
            C = torch.addcmul(Fg * Cs[t], I, C_tilde, out=Cs[t + 1])  # C_t = F_t * C_{t-1} + I_t * C~_t
            H = torch.mul(O, torch.tanh(C, out=tanh_C[t]), out=outputs[t])  # H_t = O_t * tanh(C_t)
        ctx.save_for_backward(source, ids, W_h, H0, outputs, acts, Cs, tanh_C)
        return outputs, Cs[T].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dOut, dC_last):
        source, ids, W_h, H0, outputs, acts, Cs, tanh_C = ctx.saved_tensors
        dOut = _grad_or_zeros(dOut, outputs)
        dC = _grad_or_zeros(dC_last, H0)
        W_hT = W_h.t().contiguous()
        dPre = torch.empty_like(acts)  # gradients of the pre-activations [C~ | I | F | O]
        dH = dOut[-1]
        for t in range(outputs.shape[0] - 1, -1, -1):
            C_tilde, I, Fg, O = acts[t].chunk(4, dim=1)
            dC_tilde, dI, dF, dO = dPre[t].chunk(4, dim=1)
            C_prev, tc = Cs[t], tanh_C[t]
            dC = dC + _tanh_backward(dH * O, tc)  # dC_t += dH_t O_t tanh'(C_t)
            _sigmoid_backward(dH * tc, O, grad_input=dO)  # dH_t tanh(C_t) sigmoid'(O_t)
            _sigmoid_backward(dC * C_prev, Fg, grad_input=dF)  # dC_t C_{t-1} sigmoid'(F_t)
            _sigmoid_backward(dC * C_tilde, I, grad_input=dI)  # dC_t C~_t sigmoid'(I_t)
            _tanh_backward(dC * I, C_tilde, grad_input=dC_tilde)  # dC_t I_t tanh'(C~_t)
            dH = torch.addmm(dOut[t - 1], dPre[t], W_hT) if t else torch.mm(dPre[t], W_hT)  # dH_{t-1}
            dC = dC * Fg  # dC_{t-1} through C_t = F_t * C_{t-1} + ...
        return _input_grad(dPre, source, ids), None, _weight_grad(H0, outputs, dPre), dH, dC


class _GRUThroughTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, source, ids, W_h, b_hh, H0):
        T, (B, n) = _num_steps(source, ids), H0.shape
        acts = H0.new_empty(T, B, 3 * n)  # X_t W_x* + b_*, then [R | Z | H~], of every step
        hw = H0.new_empty(T, B, 3 * n)  # [H W_hr | H W_hz | H W_hh + b_hh] of every step
        outputs = H0.new_empty(T, B, n)
        bias = torch.cat([b_hh.new_zeros(2 * n), b_hh])
        H = H0
        for t in range(T):
            h = torch.addmm(bias, H, W_h, out=hw[t])
            a = _input_rows(acts[t], source, ids, t)
            a[:, : 2 * n].add_(h[:, : 2 * n]).sigmoid_()  # R_t, Z_t = sigmoid(X W_x* + b_* + H W_h*)
            R, Z, H_tilde = a.chunk(3, dim=1)
            H_tilde.addcmul_(R, h[:, 2 * n :]).tanh_()  # H~_t = tanh(X W_xh + b_h + R_t * (H W_hh + b_hh))
            H = torch.lerp(H_tilde, H, Z, out=outputs[t])  # H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t
        ctx.save_for_backward(source, ids, W_h, H0, outputs, acts, hw)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, dOut):
        source, ids, W_h, H0, outputs, acts, hw = ctx.saved_tensors
        dOut = _grad_or_zeros(dOut, outputs)
        n = H0.shape[-1]
        W_hT = W_h.t().contiguous()
        dPre = torch.empty_like(acts)  # gradients of X W_x* + b_*: [R | Z | H~] pre-activations
        dHW = torch.empty_like(hw)  # gradients of [H W_hr | H W_hz | H W_hh + b_hh]
        dH = dOut[-1]
        for t in range(outputs.shape[0] - 1, -1, -1):
            R, Z, H_tilde = acts[t].chunk(3, dim=1)
            dR, dZ, dH_tilde = dPre[t].chunk(3, dim=1)
            H_prev = outputs[t - 1] if t else H0
            dH_direct = dH * Z  # through Z_t * H_{t-1}
            _sigmoid_backward(dH * (H_prev - H_tilde), Z, grad_input=dZ)  # dH_t (H_{t-1} - H~_t) sigmoid'(Z_t)
            _tanh_backward(dH - dH_direct, H_tilde, grad_input=dH_tilde)  # dH_t (1 - Z_t) tanh'(H~_t)
            _sigmoid_backward(dH_tilde * hw[t, :, 2 * n :], R, grad_input=dR)  # through R_t * (H W_hh + b_hh)
            torch.mul(dH_tilde, R, out=dHW[t, :, 2 * n :])
            dHW[t, :, : 2 * n] = dPre[t, :, : 2 * n]  # dR, dZ reach H W_hr, H W_hz as they reach X W_xr, X W_xz
            dH = torch.addmm(dH_direct, dHW[t], W_hT)  # dH_{t-1}
            if t:
                dH += dOut[t - 1]
        db_hh = dHW[:, :, 2 * n :].sum((0, 1))
        return _input_grad(dPre, source, ids), None, _weight_grad(H0, outputs, dHW), db_hh, dH


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
