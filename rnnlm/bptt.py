"""Backpropagation through time written out, for the scratch cells of rnnlm.models (``bptt: fused``).

Each Function below runs the equations of its cell (``rnn_step``, ``lstm_step``, ``gru_step`` in
rnnlm/models.py) over all time steps, keeping the activations; its backward walks the steps in
reverse (d2l 9.7). tests/test_models.py checks loss and gradients against autograd
differentiating those equations (``bptt: autograd``). This is the speed path only: read the
equations there first. What makes it fast without changing the maths (bench/throughput.py
measures it against the book's formulation):

* one-hot inputs: ``one_hot(x) @ W_xh + b`` is row ``x`` of ``W_xh + b``, so it is a row lookup --
  the same numbers, no V-wide matmul;
* the input projections ``X_t W_x*`` of all time steps are one matmul before the time loop, and
  the gates' hidden projections ``H_{t-1} W_h*`` are one matmul per step, on the gate matrices
  laid side by side (LAYOUT below);
* one autograd node for the whole sequence: per step one matmul and a few elementwise products,
  and the gradient of ``W_h`` summed over the steps in one matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Gate order of the stacked matrices [W_h<g> ...] (LAYOUT) and [W_x<g> ...], [b_<g> ...]
# (INPUT_LAYOUT) inside a layer. LSTM: the candidate first, so one tanh covers [C~] and one
# sigmoid covers [I | F | O]. GRU: the two orders differ so that the written-out backward finds
# every gradient it needs already side by side in one buffer (see GRUThroughTime).
LAYOUT = {"rnn": ("h",), "lstm": ("c", "i", "f", "o"), "gru": ("r", "z", "h")}
INPUT_LAYOUT = {**LAYOUT, "gru": ("h", "r", "z")}

# Per step the backward is one matmul,
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


class RNNThroughTime(torch.autograd.Function):
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


class LSTMThroughTime(torch.autograd.Function):
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
        a_, Ct_, I_, F_, O_, IFO_ = (
            acts[..., i:j].unbind(0)
            for i, j in ((0, 4 * n), (0, n), (n, 2 * n), (2 * n, 3 * n), (3 * n, 4 * n), (n, 4 * n))
        )
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
        dCIF_, dO_, dPre_, PO_, PC_, Q_, F_, dOut_ = (
            x.unbind(0) for x in (dPre[..., : 3 * n].view(T, B, 3, n), dPre[..., 3 * n :], dPre, PO, PC, Q, Fg, dOut)
        )
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


class GRUThroughTime(torch.autograd.Function):
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
        dHt_dZ, dHt, dR_dHWh, dHW_, P_, Q_, Z_, dOut_ = (
            x.unbind(0) for x in (D[:, :, 0::2], D[:, :, :1], D[:, :, 1::2], dHW, P, Q, Z, dOut)
        )
        dH = dOut_[-1]
        for t in range(T - 1, -1, -1):
            torch.mul(dH.unsqueeze(1), P_[t], out=dHt_dZ[t])  # dH~_t, dZ_t
            torch.mul(dHt[t], Q_[t], out=dR_dHWh[t])  # dR_t, dHW_h,t
            dH_prev = torch.addcmul(dOut_[t - 1], dH, Z_[t]) if t else dH * Z_[t]  # through Z_t * H_{t-1}
            dH = dH_prev.addmm_(dHW_[t], W_hT)  # + [dR | dZ | dHW_h] W_h^T
        db_hh = dHW[..., 2 * n :].sum((0, 1))
        dW_h = torch.mm(states[:-1].flatten(0, 1).t(), dHW.flatten(0, 1))  # sum_t H_{t-1}^T dHW_t
        return _input_grad(D.view(T, B, 4 * n)[..., : 3 * n], source, ids), None, dW_h, db_hh, dH
