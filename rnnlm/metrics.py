"""Perplexity and bits per token, and evaluation of a model over a whole split."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from .batching import eval_streams


def perplexity(nll_sum: float, count: int) -> float:
    """exp of the mean negative log-likelihood (natural log); inf when it overflows."""
    mean = nll_sum / count
    return math.exp(mean) if mean < 700 else math.inf


def bits_per_token(nll_sum: float, count: int) -> float:
    """Mean negative log2-likelihood: bits per character at char level."""
    return nll_sum / count / math.log(2)


@torch.no_grad()
def model_token_nll(
    model, tokens: np.ndarray, batch_size: int, num_steps: int, device="cpu", progress: str | None = None
) -> np.ndarray:
    """NLL (nats, float64) of each of tokens[1:] given the tokens before it, in order: the split
    as ``batch_size`` contiguous streams (``eval_streams``) walked ``num_steps`` at a time, dropout
    off. With ``batch_size=1`` every token sees all the tokens before it (exact); with more, each
    stream starts from a zero state: faster, slightly pessimistic. ``num_steps`` never changes the
    result. ``progress``: label of a tqdm bar counting tokens (None: no bar)."""
    was_training = model.training
    model.eval()
    X, Y, M = eval_streams(np.asarray(tokens), batch_size)
    X, Y = X.to(device), Y.to(device)
    state = None
    chunks = []
    with tqdm(
        total=int(M.sum()), desc=progress, unit="tok", unit_scale=True, disable=progress is None, leave=False
    ) as bar:
        for i in range(0, X.shape[1], num_steps):
            nll, state = model.token_nll(X[:, i : i + num_steps], Y[:, i : i + num_steps], state)
            chunks.append(nll.cpu().double())  # on the CPU: Apple mps has no float64
            bar.update(int(M[:, i : i + num_steps].sum()))
    model.train(was_training)
    nll = torch.cat(chunks, dim=1)  # (streams, length): the streams are consecutive pieces of the split
    return nll.reshape(-1)[M.reshape(-1)].numpy()


def model_nll(model, tokens: np.ndarray, batch_size: int, num_steps: int, device="cpu") -> tuple[float, int]:
    """Total NLL (nats) of tokens[1:] and their count (:func:`model_token_nll`)."""
    nll = model_token_nll(model, tokens, batch_size, num_steps, device)
    return float(nll.sum()), len(nll)


def mixture_weight(log_p: np.ndarray, log_q: np.ndarray, tol: float = 1e-7, max_iter: int = 1000) -> float:
    """The ``lam`` maximising the likelihood of ``lam * p + (1 - lam) * q`` (EM; Mikolov 2011),
    from two models' log-probabilities of the same targets."""
    p, q = np.exp(log_p), np.exp(log_q)
    lam = 0.5
    for _ in range(max_iter):
        new = float(np.mean(lam * p / (lam * p + (1 - lam) * q)))
        if abs(new - lam) < tol:
            return new
        lam = new
    return lam


def mixture_log_probs(log_p: np.ndarray, log_q: np.ndarray, lam: float) -> np.ndarray:
    """log(lam * p + (1 - lam) * q), computed stably."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log(lam) + log_p, np.log1p(-lam) + log_q)
