"""Count-based baselines for the evaluate stage: add-alpha unigram and interpolated Kneser-Ney.

Tokens are integer ids in ``[0, vocab_size)``; id 0 (``<unk>``) is an ordinary entry. Both models
spread probability over this closed vocabulary, as the recurrent models do, so all their
perplexities on the same ids are directly comparable.

Interpolated Kneser-Ney (Chen & Goodman 1999), one discount per order:

* The highest order counts ``c(h w)``; every lower order ``k`` counts continuations ``N1+(. g)``,
  the number of distinct tokens seen just before the k-gram ``g``. The start of the corpus is one
  more distinct left context (as a ``<s>`` would be), so every k-gram of the corpus counts >= 1.
* ``D_k = n1 / (n1 + 2 n2)`` from the counts-of-counts of order ``k``, clamped to
  ``[DISCOUNT_MIN, DISCOUNT_MAX]``.
* ``P_k(w | h) = max(c(h w) - D_k, 0) / c(h .) + D_k * N1+(h .) / c(h .) * P_{k-1}(w | h')``, where
  ``h'`` is ``h`` without its first token; below order 1 is the uniform ``1 / vocab_size``, so every
  id has non-zero probability. An unseen context (``c(h .) == 0``) leaves ``P_{k-1}(w | h')`` with
  full weight; a context shorter than ``order - 1`` (a sequence's start) uses order ``len(h) + 1``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from rnnlm.errors import RnnlmError

DISCOUNT_MIN = 0.01
DISCOUNT_MAX = 0.99


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise RnnlmError(f"{name} must be an integer, got {v!r}")
    if v < 1:
        raise RnnlmError(f"{name} must be >= 1, got {v}")
    return int(v)


def _as_ids(tokens: Any, vocab_size: int, what: str = "tokens") -> np.ndarray:
    """``tokens`` as a 1-D integer array (not copied), every id checked to lie in ``[0, vocab_size)``."""
    try:
        arr = np.asarray(tokens)
    except Exception as exc:  # ragged lists and the like
        raise RnnlmError(f"{what}: cannot be read as a sequence of token ids ({exc})") from None
    if arr.ndim != 1:
        raise RnnlmError(f"{what}: expected a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise RnnlmError(f"{what}: token ids must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise RnnlmError(f"{what}: token id {bad} is outside [0, {vocab_size}) (vocab_size={vocab_size})")
    return arr


class UnigramLM:
    """Add-alpha smoothed unigram model: ``P(w) = (c(w) + alpha) / (N + alpha * V)``."""

    def __init__(self, vocab_size: int, alpha: float = 1.0):
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise RnnlmError(f"alpha must be a number, got {alpha!r}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise RnnlmError(
                f"alpha must be a finite number > 0 (so unseen ids keep non-zero probability), got {alpha}"
            )
        self.alpha = float(alpha)
        self.counts = self._probs = self._log_probs = None  # set by fit()

    def fit(self, tokens: Any) -> UnigramLM:
        ids = _as_ids(tokens, self.vocab_size)
        self.counts = np.bincount(ids, minlength=self.vocab_size).astype(np.int64)
        self._probs = (self.counts + self.alpha) / (ids.size + self.alpha * self.vocab_size)
        self._log_probs = np.log(self._probs)
        return self

    def _fitted(self) -> np.ndarray:
        if self._probs is None:
            raise RnnlmError("UnigramLM: call fit() before asking for probabilities")
        return self._probs

    def token_log_probs(self, tokens: Any, history: Any = ()) -> np.ndarray:
        """Natural-log probability of each of ``tokens`` (``history`` is validated, otherwise unused)."""
        self._fitted()
        ids = _as_ids(tokens, self.vocab_size)
        _as_ids(history, self.vocab_size, "history")
        return self._log_probs[ids]


class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram model (see the module docstring). After ``fit``,
    ``discounts[k-1]`` is the discount of order ``k`` and ``counts[k-1]`` maps each k-gram (tuple
    of ids) to its raw count (k == order) or continuation count (k < order)."""

    def __init__(self, order: int, vocab_size: int):
        self.order = _positive_int("order", order)
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        self.discounts: list[float] = []
        self.counts: list[dict[tuple[int, ...], int]] = []
        # _levels[k]: context of k ids -> ({next id: count}, 1 / c(h .), backoff weight D N1+(h .) / c(h .))
        self._levels: list[dict[tuple[int, ...], tuple[dict[int, int], float, float]]] = []

    def fit(self, tokens: Any) -> KneserNeyLM:
        seq = _as_ids(tokens, self.vocab_size).tolist()
        n = self.order
        # islice: n shifted views of the corpus rather than n copies
        top = Counter(zip(*(itertools.islice(seq, i, None) for i in range(n)))) if len(seq) >= n else Counter()
        counts = [dict(top)]
        for k in range(n - 1, 0, -1):
            # The k-grams that end a distinct (k+1)-gram, plus the corpus start: every distinct k-gram
            # of the corpus, each with its continuation count.
            cont = Counter(g[1:] for g in counts[0])
            if len(seq) >= k:
                cont[tuple(seq[:k])] += 1
            counts.insert(0, dict(cont))

        discounts, levels = [], []
        for cnt in counts:
            vals = list(cnt.values())
            n1, n2 = vals.count(1), vals.count(2)
            d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
            d = min(max(d, DISCOUNT_MIN), DISCOUNT_MAX)
            children: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)
            for g, c in cnt.items():
                children[g[:-1]][g[-1]] = c
            levels.append({h: (ch, (inv := 1.0 / sum(ch.values())), d * len(ch) * inv) for h, ch in children.items()})
            discounts.append(d)
        self.counts, self.discounts, self._levels = counts, discounts, levels
        return self

    def _check_fitted(self) -> None:
        if not self._levels:
            raise RnnlmError("KneserNeyLM: call fit() before asking for probabilities")

    def _prob(self, ctx: tuple[int, ...], w: int) -> float:
        """P(w | ctx), ``ctx`` already cut to at most order-1 ids (not validated)."""
        p = 1.0 / self.vocab_size
        L = len(ctx)
        for k in range(L + 1):  # context length k, model order k + 1
            entry = self._levels[k].get(ctx[L - k :])
            if entry is None:
                break  # an unseen context: every longer one is unseen too
            ch, inv, gamma = entry
            c = ch.get(w, 0)
            p = (c - self.discounts[k]) * inv + gamma * p if c else gamma * p
        return p

    def token_log_probs(self, tokens: Any, history: Any = ()) -> np.ndarray:
        """Natural-log probability of each of ``tokens``, each given up to order-1 ids before it;
        ``history`` (ids that precede ``tokens``) is context only."""
        self._check_fitted()
        ids = _as_ids(tokens, self.vocab_size).tolist()
        m = self.order - 1
        hist = _as_ids(history, self.vocab_size, "history").tolist()
        hist = hist[-m:] if m else []
        seq = hist + ids
        probs = [self._prob(tuple(seq[max(0, i - m) : i]), seq[i]) for i in range(len(hist), len(seq))]
        return np.log(np.array(probs, dtype=np.float64))
