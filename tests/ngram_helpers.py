"""Probability queries on the n-gram models that only the tests ask (the evaluate stage needs
``token_log_probs`` alone). ``distribution`` computes a whole distribution its own way (one numpy
pass per order), so it is an independent check of the scorer's ``_prob``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.ngram import KneserNeyLM, UnigramLM, _as_ids


def _check_token(token: Any, vocab_size: int) -> int:
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
        raise RnnlmError(f"token must be an integer id, got {token!r}")
    if not 0 <= token < vocab_size:
        raise RnnlmError(f"token id {token} is outside [0, {vocab_size}) (vocab_size={vocab_size})")
    return int(token)


def _context(model: KneserNeyLM, context: Any) -> tuple[int, ...]:
    """The last order-1 ids of ``context``, validated."""
    ctx = _as_ids(context, model.vocab_size, "context")
    m = model.order - 1
    return tuple(ctx[max(0, len(ctx) - m) :].tolist()) if m > 0 else ()


def prob(model, context: Any, token: int) -> float:
    """P(token | context); only the last order-1 ids of ``context`` are used."""
    if isinstance(model, UnigramLM):
        return float(model._fitted()[_check_token(token, model.vocab_size)])
    model._check_fitted()
    return model._prob(_context(model, context), _check_token(token, model.vocab_size))


def distribution(model, context: Any = ()) -> np.ndarray:
    """P(. | context) over the whole vocabulary, shape (vocab_size,), float64."""
    if isinstance(model, UnigramLM):
        return model._fitted().copy()  # the context is ignored
    assert isinstance(model, KneserNeyLM)
    model._check_fitted()
    ctx = _context(model, context)
    V = model.vocab_size
    p = np.full(V, 1.0 / V, dtype=np.float64)
    L = len(ctx)
    for k in range(L + 1):
        entry = model._levels[k].get(ctx[L - k :] if k else ())
        if entry is None:
            break
        ch, inv, gamma = entry
        p *= gamma
        ws = np.fromiter(ch.keys(), dtype=np.int64, count=len(ch))
        cs = np.fromiter(ch.values(), dtype=np.float64, count=len(ch))
        p[ws] += (cs - model.discounts[k]) * inv
    return p


def log_prob(model, tokens: Any, history: Any = ()) -> float:
    """Total natural-log probability of ``tokens`` (see ``token_log_probs``)."""
    return float(model.token_log_probs(tokens, history).sum())


def perplexity_of(model, tokens: Any, history: Any = ()) -> float:
    """``exp(-log_prob(tokens, history) / len(tokens))``."""
    n = len(tokens)
    if n == 0:
        raise RnnlmError("perplexity_of: need at least one token to score")
    return float(math.exp(-log_prob(model, tokens, history) / n))
