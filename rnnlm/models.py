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
# Gate order of the stacked matrices [W_h<g> ...] (LAYOUT) and [W_x<g> ...], [b_<g> ...]
# (INPUT_LAYOUT) inside a layer. LSTM: the candidate first, so one tanh covers [C~] and one
# sigmoid covers [I | F | O]. GRU: the two orders differ so that the written-out backward finds
# every gradient it needs already side by side in one buffer (see _GRUThroughTime).
LAYOUT = {"rnn": ("h",), "lstm": ("c", "i", "f", "o"), "gru": ("r", "z", "h")}
INPUT_LAYOUT = {**LAYOUT, "gru": ("h", "r", "z")}


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

    # The equations, one time step each; xw = X_t W_x + b (all gates, in INPUT_LAYOUT order).
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
        hw = H @ W_h  # [H W_hr | H W_hz | H W_hh]; xw = [X W_xh + b_h | X W_xr + b_r | X W_xz + b_z]
        # R_t, Z_t = sigmoid(X_t W_x* + H_{t-1} W_h* + b_*)
        R, Z = torch.sigmoid(xw[:, n:] + hw[:, : 2 * n]).chunk(2, dim=-1)
        # candidate state H~_t = tanh(X_t W_xh + b_h + R_t * (H_{t-1} W_hh + b_hh)) (reset after, see module doc)
        H_tilde = torch.tanh(xw[:, :n] + R * (hw[:, 2 * n :] + self.b_hh))
        return Z * H + (1 - Z) * H_tilde  # H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t


# --- backpropagation through time, written out ------------------------------------------------
# Each Function below runs the equations of its _<cell>_step over all time steps, keeping the
# activations; its backward walks the steps in reverse (d2l 9.7). Per step that is one matmul,
# dH_{t-1} = dPre_t W_h^T (+ dOut_{t-1}), and a few elementwise products giving dPre_t, the
# gradient of the step's pre-activations; the gradient of W_h, sum_t H_{t-1}^T dPre_t, is one
# matmul over all steps at the end. Autograd, by comparison, records ~15 nodes per step and
# computes the W_h gradient step by step. The input side X_t W_x + b comes in as ``source``:
# XW for all steps (its gradient is dPre), or for one-hot inputs the table W_x + b with the
# token ids (its gradient: dPre summed per id). The backward passes compute every factor that
# does not depend on the incoming gradient for all steps before the loop, so the loop
# itself is a few products per step. Per-step views are made once with unbind: in a loop of
# small products, slicing costs about as much as the arithmetic. sigmoid' and tanh' come from the outputs
# s = sigmoid(x), y = tanh(x): sigmoid_backward(g, s) = g s (1 - s), tanh_backward(g, y) = g (1 - y^2).
_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _num_steps(source, ids):
    return source.shape[0] if ids is None else ids.shape[0]


def _input_grad(dPre, source, ids):
    """Gradient of ``source`` given dPre = d(X_t W_x + b) for every step."""
    if ids is None:
        return dPre
    # index_add_ is several times slower from a strided dPre than a copy followed by it
    return torch.zeros_like(source).index_add_(0, ids.flatten(), dPre.flatten(0, 1).contiguous())


def _grad_or_zeros(grad, like):
    return torch.zeros_like(like) if grad is None else grad.contiguous()


class _RNNThroughTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, source, ids, W_h, H0):
        T = _num_steps(source, ids)
        states = H0.new_empty(T + 1, *H0.shape)  # H0, then H_t of every step
        states[0] = H0
        states[1:] = source if ids is None else F.embedding(ids, source)  # X_t W_xh + b_h of every step
        H_ = states.unbind(0)  # per-step views, made once
        for t in range(T):
            H_[t + 1].addmm_(H_[t], W_h).tanh_()  # H_t = tanh(X_t W_xh + b_h + H_{t-1} W_hh)
        ctx.save_for_backward(source, ids, W_h, states)
        return states[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, dOut):
        source, ids, W_h, states = ctx.saved_tensors
        outputs = states[1:]
        dOut = _grad_or_zeros(dOut, outputs)
        W_hT = W_h.t()  # (a transposing copy costs more than the matmuls gain from it)
        dPre = torch.ones_like(outputs).addcmul_(outputs, outputs, value=-1)  # tanh' = 1 - H_t^2, all steps
        dPre_, dOut_ = dPre.unbind(0), dOut.unbind(0)
        dH = dOut_[-1]
        for t in range(len(dPre_) - 1, -1, -1):
            dPre_[t].mul_(dH)  # dPre_t = dH_t (1 - H_t^2)
            dH = torch.addmm(dOut_[t - 1], dPre_[t], W_hT) if t else torch.mm(dPre_[t], W_hT)  # dH_{t-1}
        dW_h = torch.mm(states[:-1].flatten(0, 1).t(), dPre.flatten(0, 1))  # sum_t H_{t-1}^T dPre_t
        return _input_grad(dPre, source, ids), None, dW_h, dH


class _LSTMThroughTime(torch.autograd.Function):
    """LSTM with written-out BPTT. Gate layout [C~ | I | F | O] (LAYOUT["lstm"]).

    Per step the backward needs only products with factors known before the loop:
    dO_t = dH_t tanh(C_t) sigmoid'(O_t); dC_t = dC_t(from t+1) + dH_t O_t tanh'(C_t); then
    [dC~_t | dI_t | dF_t] = dC_t [I_t tanh'(C~_t) | C~_t sigmoid'(I_t) | C_{t-1} sigmoid'(F_t)]
    and dC_{t-1} = dC_t F_t. The factors are computed for all steps at once, so a step is
    three products, one addcmul and one matmul.
    """

    @staticmethod
    def forward(ctx, source, ids, W_h, H0, C0):
        T, (B, n) = _num_steps(source, ids), H0.shape
        # X_t W_x* + b_* of every step; the loop adds H_{t-1} W_h* and squashes: [C~ | I | F | O]
        acts = source.clone() if ids is None else F.embedding(ids, source)
        Cs = H0.new_empty(T + 1, B, n)  # C0, then C_t of every step
        tanh_C = H0.new_empty(T, B, n)
        states = H0.new_empty(T + 1, B, n)  # H0, then H_t of every step
        Cs[0], states[0] = C0, H0
        # per-step views, made once: slicing inside the loop costs as much as the small products
        a_, Ct_, I_, F_, O_, IFO_ = (acts[..., i:j].unbind(0) for i, j in (
            (0, 4 * n), (0, n), (n, 2 * n), (2 * n, 3 * n), (3 * n, 4 * n), (n, 4 * n)))
        C_, tC_, H_ = Cs.unbind(0), tanh_C.unbind(0), states.unbind(0)
        for t in range(T):
            a_[t].addmm_(H_[t], W_h)  # X_t W_x* + b_* + H_{t-1} W_h*
            Ct_[t].tanh_()  # C~_t = tanh(...)
            IFO_[t].sigmoid_()  # I_t, F_t, O_t = sigmoid(...)
            torch.addcmul(F_[t] * C_[t], I_[t], Ct_[t], out=C_[t + 1])  # C_t = F_t * C_{t-1} + I_t * C~_t
            torch.mul(O_[t], torch.tanh(C_[t + 1], out=tC_[t]), out=H_[t + 1])  # H_t = O_t * tanh(C_t)
        ctx.save_for_backward(source, ids, W_h, states, acts, Cs, tanh_C)
        return states[1:], Cs[T].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dOut, dC_last):
        source, ids, W_h, states, acts, Cs, tanh_C = ctx.saved_tensors
        T, B, n = tanh_C.shape
        dOut = _grad_or_zeros(dOut, tanh_C)
        dC = _grad_or_zeros(dC_last, Cs[0])
        C_tilde, I, Fg, O = acts.chunk(4, dim=2)
        # the factors of every step, at once: dO/dH, dC/dH, and [dC~ | dI | dF] / dC
        PO = _sigmoid_backward(tanh_C, O)  # tanh(C_t) sigmoid'(O_t)
        PC = _tanh_backward(O, tanh_C)  # O_t tanh'(C_t)
        Q = tanh_C.new_empty(T, B, 3, n)
        _tanh_backward(I, C_tilde, grad_input=Q[:, :, 0])  # I_t tanh'(C~_t)
        _sigmoid_backward(C_tilde, I, grad_input=Q[:, :, 1])  # C~_t sigmoid'(I_t)
        _sigmoid_backward(Cs[:-1], Fg, grad_input=Q[:, :, 2])  # C_{t-1} sigmoid'(F_t)
        dPre = tanh_C.new_empty(T, B, 4 * n)  # gradients of the pre-activations [C~ | I | F | O]
        # the per-step views, made once
        dCIF_, dO_, dPre_, PO_, PC_, Q_, F_, dOut_ = (x.unbind(0) for x in (
            dPre[..., : 3 * n].view(T, B, 3, n), dPre[..., 3 * n :], dPre, PO, PC, Q, Fg, dOut))
        W_hT = W_h.t()  # (a transposing copy costs more than the matmuls gain from it)
        dH = dOut_[-1]
        for t in range(T - 1, -1, -1):
            torch.mul(dH, PO_[t], out=dO_[t])  # dO_t
            dC = torch.addcmul(dC, dH, PC_[t])  # dC_t += dH_t O_t tanh'(C_t)
            torch.mul(dC.unsqueeze(1), Q_[t], out=dCIF_[t])  # dC~_t, dI_t, dF_t
            dH = torch.addmm(dOut_[t - 1], dPre_[t], W_hT) if t else torch.mm(dPre_[t], W_hT)  # dH_{t-1}
            dC = dC * F_[t]  # dC_{t-1} through C_t = F_t * C_{t-1} + ...
        dW_h = torch.mm(states[:-1].flatten(0, 1).t(), dPre.flatten(0, 1))  # sum_t H_{t-1}^T dPre_t
        return _input_grad(dPre, source, ids), None, dW_h, dH, dC


class _GRUThroughTime(torch.autograd.Function):
    """GRU with written-out BPTT. W_h's columns are [r | z | h], source's [h | r | z].

    Per step the backward needs only products of dH_t with factors known before the loop:
    dH~_t = dH_t (1 - Z_t) tanh'(H~_t) and dZ_t = dH_t (H_{t-1} - H~_t) sigmoid'(Z_t), then
    dR_t = dH~_t (H_{t-1} W_hh + b_hh) sigmoid'(R_t) and dHW_h,t = d(H W_hh + b_hh)_t = dH~_t R_t.
    The factors are computed for all steps at once, and the gradients go into one buffer laid
    out [dH~ | dR | dZ | dHW_h], so that a step is two products (each filling two blocks), one
    addcmul and one matmul, and no copies: [dR | dZ | dHW_h] is the gradient of H W_h (the
    matmul's operand) and [dH~ | dR | dZ] the gradient of ``source``.
    """

    @staticmethod
    def forward(ctx, source, ids, W_h, b_hh, H0):
        T, (B, n) = _num_steps(source, ids), H0.shape
        # acts[t] starts as [X W_xh + b_h | X W_xr + b_r | X W_xz + b_z | b_hh]; the step adds
        # H_{t-1} W_h to the last three blocks and squashes two: [. | R_t | Z_t | H_{t-1} W_hh + b_hh]
        if ids is None:
            acts = torch.cat([source, b_hh.expand(T, B, n)], dim=-1)
        else:
            acts = F.embedding(ids, torch.cat([source, b_hh.expand(source.shape[0], n)], dim=-1))
        states = H0.new_empty(T + 1, B, n)  # H0, then H_t of every step
        states[0] = H0
        H_tilde = H0.new_empty(T, B, n)
        # per-step views, made once: [X W_xh + b_h], [the three blocks H W_h goes to], [R | Z], [H W_hh + b_hh]
        xw_h, pre, RZ, hw_h = (acts[..., i:j].unbind(0) for i, j in ((0, n), (n, 4 * n), (n, 3 * n), (3 * n, 4 * n)))
        H_, Ht_ = states.unbind(0), H_tilde.unbind(0)
        for t in range(T):
            pre[t].addmm_(H_[t], W_h)
            R, Z = RZ[t].sigmoid_().chunk(2, dim=1)  # R_t, Z_t = sigmoid(X W_x* + b_* + H W_h*)
            # H~_t = tanh(X W_xh + b_h + R_t * (H W_hh + b_hh)) (reset after the matmul, see module doc)
            torch.addcmul(xw_h[t], R, hw_h[t], out=Ht_[t]).tanh_()
            torch.lerp(Ht_[t], H_[t], Z, out=H_[t + 1])  # H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t
        ctx.save_for_backward(source, ids, W_h, states, acts, H_tilde)
        return states[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, dOut):
        source, ids, W_h, states, acts, H_tilde = ctx.saved_tensors
        T, B, n = H_tilde.shape
        dOut = _grad_or_zeros(dOut, H_tilde)
        R, Z, hw_h = acts[..., n : 2 * n], acts[..., 2 * n : 3 * n], acts[..., 3 * n :]
        # the factors of every step, at once. P[t] = [(1 - Z_t) tanh'(H~_t) | (H_{t-1} - H~_t) sigmoid'(Z_t)];
        # Q[t] = [(H W_hh + b_hh) sigmoid'(R_t) | R_t]
        P, Q = H_tilde.new_empty(2, T, B, 2, n).unbind(0)
        _tanh_backward(1 - Z, H_tilde, grad_input=P[:, :, 0])
        _sigmoid_backward(states[:-1] - H_tilde, Z, grad_input=P[:, :, 1])
        _sigmoid_backward(hw_h, R, grad_input=Q[:, :, 0])
        Q[:, :, 1] = R
        D = H_tilde.new_empty(T, B, 4, n)  # per step [dH~ | dR | dZ | dHW_h]
        dHW = D.view(T, B, 4 * n)[..., n:]  # [dR | dZ | dHW_h]: the gradient of H_{t-1} W_h
        W_hT = W_h.t()  # (a transposing copy costs more than the matmuls gain from it)
        # the per-step views, made once: slicing inside the loop costs as much as the small products
        dHt_dZ, dHt, dR_dHWh, dHW_, P_, Q_, Z_, dOut_ = (x.unbind(0) for x in (
            D[:, :, 0::2], D[:, :, :1], D[:, :, 1::2], dHW, P, Q, Z, dOut))
        dH = dOut_[-1]
        for t in range(T - 1, -1, -1):
            torch.mul(dH.unsqueeze(1), P_[t], out=dHt_dZ[t])  # dH~_t, dZ_t
            torch.mul(dHt[t], Q_[t], out=dR_dHWh[t])  # dR_t, dHW_h,t
            dH_prev = torch.addcmul(dOut_[t - 1], dH, Z_[t]) if t else dH * Z_[t]  # through Z_t * H_{t-1}
            dH = dH_prev.addmm_(dHW_[t], W_hT)  # + [dR | dZ | dHW_h] W_h^T
        db_hh = dHW[..., 2 * n :].sum((0, 1))
        dW_h = torch.mm(states[:-1].flatten(0, 1).t(), dHW.flatten(0, 1))  # sum_t H_{t-1}^T dHW_t
        return _input_grad(D.view(T, B, 4 * n)[..., : 3 * n], source, ids), None, dW_h, db_hh, dH


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
    """Embedding (or one-hot) -> dropout -> recurrent layers -> dropout -> decoder over the vocabulary.

    The decoder is a linear layer (``softmax: full``), optionally sharing the embedding matrix
    (``tie_weights``, Press & Wolf 2017; needs embedding == hidden), or an adaptive softmax
    (``softmax: adaptive``, Grave et al. 2017: ``nn.AdaptiveLogSoftmaxWithLoss``) whose cost at
    10k+ words is a fraction of the full one. ``dropout`` applies to the embeddings, between
    layers and to the outputs.
    """

    def __init__(self, cell: str, impl: str, vocab_size: int, hidden: int = 256, layers: int = 1,
                 dropout: float = 0.0, embedding: int = 32, tie_weights: bool = False, softmax: str = "full",
                 cutoffs: tuple[int, ...] | list[int] = ()):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}")
        if tie_weights and (embedding != hidden or softmax != "full"):
            raise ValueError("tie_weights needs embedding == hidden and softmax 'full'")
        cutoffs = list(cutoffs) if softmax == "adaptive" else []
        if softmax == "adaptive" and not cutoffs:
            cutoffs = default_cutoffs(vocab_size)
        self.config = dict(cell=cell, impl=impl, vocab_size=vocab_size, hidden=hidden, layers=layers,
                           dropout=dropout, embedding=embedding, tie_weights=tie_weights, softmax=softmax,
                           cutoffs=cutoffs)
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
        if softmax == "adaptive":
            self.decoder = None
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab_size, cutoffs, div_value=4.0)
        else:
            self.adaptive = None
            self.decoder = nn.Linear(hidden, vocab_size)
            if tie_weights:
                self.decoder.weight = self.embedding.weight

    def begin_state(self, batch_size: int, device=None):
        dtype = next(self.parameters()).dtype
        h = torch.zeros(self.num_layers, batch_size, self.hidden, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def features(self, X: torch.Tensor, state=None):
        """X: (batch, time) token ids. Returns the last layer's outputs (time, batch, hidden), after
        dropout, and the final state."""
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        ids = X.T  # time-major inside
        if self.embedding is not None:
            inputs = self.drop(self.embedding(ids))
        elif self.impl == "scratch":
            inputs = ids  # one-hot handled as a row lookup in the first layer
        else:
            inputs = F.one_hot(ids, self.vocab_size).to(next(self.parameters()).dtype)
        outputs, state = self.rnn(inputs, state)
        return self.drop(outputs), state

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
        targets = Y.T.reshape(-1)
        if self.adaptive is not None:  # float32 even under autocast: its index_copy_ mixes dtypes otherwise
            with torch.autocast(outputs.device.type, enabled=False):
                out = self.adaptive(_at_least_float32(outputs.reshape(-1, outputs.shape[-1])), targets)
            nll = -out.output
        else:
            logits = _at_least_float32(self.decoder(outputs))
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
        return nll.reshape(Y.shape[1], Y.shape[0]).T, state


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bfloat16/float16 (autocast) -> float32; float32 and float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def default_cutoffs(vocab_size: int) -> list[int]:
    """Adaptive-softmax cluster bounds: a head of the 2,000 most frequent tokens (ids are
    frequency-ordered), then 10,000, for vocabularies large enough to gain from them."""
    return [c for c in (2000, 10000) if c < vocab_size - 1] or [max(1, vocab_size // 2)]


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
