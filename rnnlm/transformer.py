"""A small decoder-only Transformer (GPT-style, pre-norm) with the recurrent models' interface.

Each block (d = d_model, B = batch, T = time):

    x = x + Attention(LayerNorm(x))   # causal: position t attends to positions <= t
    x = x + MLP(LayerNorm(x))         # Linear(d, 4d) -> GELU -> Linear(4d, d)

    Attention(x) = concat_h softmax(Q_h K_h^T / sqrt(d / heads) + causal mask) V_h, then W_o

with Q, K, V = x W_q, x W_k, x W_v split into ``heads`` heads, computed by
``F.scaled_dot_product_attention``. Inputs are token embeddings plus learned position
embeddings (one per position of a window of ``context`` tokens); the output layer is
:class:`rnnlm.models.LanguageModel`'s (full, tied or adaptive softmax).

**The state and the window.** A Transformer sees at most ``context`` tokens. To read a long text
in pieces as the recurrent models do, its state is the text read so far: its last ``context - 1``
tokens and the position reached. Positions are cut into blocks of ``stride = context // 2``; every
token of a block is predicted by one window, the ``context`` tokens that end with the block (a
sliding window with stride ``context // 2``). So each token is predicted from the
``context // 2 + 1`` to ``context`` tokens up to it (all of them near the start of a text), and
which ones depends on its position only, never on how a caller cuts the text into pieces. In
training, the window is the minibatch's own ``num_steps`` tokens (nanoGPT's way): no history.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .models import LanguageModel, output_cutoffs


class Block(nn.Module):
    """One pre-norm Transformer block: causal self-attention, then an MLP, each added to x."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)  # W_q, W_k, W_v side by side
        self.out = nn.Linear(d_model, d_model)  # W_o
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # (B, T, d) each
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d/h)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, T, d)))  # heads concatenated: (B, T, d)
        return x + self.drop(self.mlp(self.ln2(x)))


class TransformerLM(LanguageModel):
    """Token + position embeddings -> dropout -> ``layers`` blocks -> LayerNorm -> the output layer."""

    impl = "torch"

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        d_model: int = 128,
        layers: int = 4,
        heads: int = 4,
        context: int = 128,
        dropout: float = 0.0,
        tie_weights: bool = True,
        softmax: str = "full",
        cutoffs: tuple[int, ...] | list[int] = (),
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        cutoffs = output_cutoffs(softmax, cutoffs, vocab_size)
        self.config = dict(cell=cell, vocab_size=vocab_size, d_model=d_model, layers=layers, heads=heads)
        self.config |= dict(context=context, dropout=dropout, tie_weights=tie_weights, softmax=softmax, cutoffs=cutoffs)
        self.cell, self.vocab_size, self.hidden, self.num_layers = cell, vocab_size, d_model, layers
        self.context, self.stride = context, max(1, context // 2)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.init_output(d_model, vocab_size, softmax, cutoffs, tie_weights)
        for name, p in self.named_parameters():  # GPT-2's initialisation, as nanoGPT does it
            if p.dim() == 2 and "adaptive" not in name:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias") and "ln" not in name:
                nn.init.zeros_(p)

    def begin_state(self, batch_size: int, device=None):
        """(tokens read so far, at most context - 1 of them: (1, B, S); position reached: (1, B)).
        The batch is on dim 1, as in the recurrent models' states."""
        history = torch.zeros(1, batch_size, 0, dtype=torch.long, device=device)
        return history, torch.zeros(1, batch_size, dtype=torch.long, device=device)

    def window(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T), T <= context, the first at window position 0 -> last-layer outputs (B, T, d)."""
        x = self.embedding(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def features(self, X: torch.Tensor, state=None):
        """X: (B, T) token ids. Returns the outputs for X (T, B, d_model) and the new state."""
        B, T = X.shape
        history, position = self.begin_state(B, X.device) if state is None else state
        if self.training:  # the minibatch alone, in windows of `context` (one when num_steps <= context)
            history, origin, stride = history[:, :, :0], 0, self.context
        else:
            origin, stride = int(position[0, 0]), self.stride
        ids = torch.cat([history[0], X.long()], dim=1)  # (B, S + T)
        first = origin - history.shape[2]  # the text position of ids[:, 0]
        outputs, i = [], history.shape[2]
        while i < ids.shape[1]:  # one window per block of `stride` positions that X reaches
            block_end = ((first + i) // stride + 1) * stride  # text position after the block
            start = max(0, block_end - self.context) - first  # the window's first index in ids
            end = min(ids.shape[1], block_end - first)
            outputs.append(self.window(ids[:, start:end])[:, i - start :])
            i = end
        keep = ids[:, -(self.context - 1) :] if self.context > 1 else ids[:, :0]
        new_state = keep[None], position + T
        return torch.cat(outputs, dim=1).transpose(0, 1), new_state
