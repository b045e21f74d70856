"""Perplexity and bits per token, and evaluation of a model over a whole split."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .batching import eval_streams


def perplexity(nll_sum: float, count: int) -> float:
    """exp of the mean negative log-likelihood (natural log); inf when it overflows."""
    mean = nll_sum / count
    return math.exp(mean) if mean < 700 else math.inf


def bits_per_token(nll_sum: float, count: int) -> float:
    """Mean negative log2-likelihood: bits per character at char level."""
    return nll_sum / count / math.log(2)


@torch.no_grad()
def model_nll(model, tokens: np.ndarray, batch_size: int, num_steps: int, device="cpu") -> tuple[float, int]:
    """Total NLL (nats) of tokens[1:] given their preceding tokens, and the count.

    The split is laid out as ``batch_size`` contiguous streams (see ``eval_streams``) walked
    ``num_steps`` at a time with the hidden state carried; dropout is off; every target is scored
    once. With ``batch_size=1`` every token is conditioned on all the tokens before it (exact).
    With B > 1 each stream starts from a zero state, so the first tokens of streams 2..B see less
    context: faster, and slightly pessimistic. ``num_steps`` never changes the result.
    """
    was_training = model.training
    model.eval()
    X, Y, M = eval_streams(np.asarray(tokens), batch_size)
    X, Y, M = X.to(device), Y.to(device), M.to(device)
    state = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, X.shape[1], num_steps):
        logits, state = model(X[:, i : i + num_steps], state)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Y[:, i : i + num_steps].reshape(-1), reduction="none")
        total += (nll.double() * M[:, i : i + num_steps].reshape(-1)).sum()
    model.train(was_training)
    return float(total), int(M.sum())
