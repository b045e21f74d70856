"""Count-based baselines for the evaluate stage: add-alpha unigram and interpolated Kneser-Ney.

Tokens are integer ids in ``[0, vocab_size)``; id 0 (``<unk>``) is an ordinary vocabulary entry.
All probabilities are over the closed vocabulary, so perplexities are directly comparable with
the recurrent models' perplexities on the same ids.

Kneser-Ney details (interpolated KN, Chen & Goodman 1999, one discount per order):

* The highest order uses raw counts ``c(h w)``; every lower order ``k`` uses continuation
  counts ``N1+(. g)``: the number of distinct tokens seen immediately before the k-gram ``g``.
  The start of the training corpus counts as one extra distinct left context (like a ``<s>``
  symbol would), so every k-gram that occurs in the corpus has a continuation count >= 1.
* Discount of order ``k``: ``D_k = n1 / (n1 + 2 n2)`` from the counts-of-counts of that order's
  (raw or continuation) counts, clamped to ``[DISCOUNT_MIN, DISCOUNT_MAX]`` inside (0, 1).
* ``P_k(w | h) = max(c(h w) - D_k, 0) / c(h .) + D_k * N1+(h .) / c(h .) * P_{k-1}(w | h')``
  where ``h'`` drops the first token of ``h``; below order 1 sits the uniform ``1 / vocab_size``,
  so every id has non-zero probability.
* A context ``h`` never seen at order ``k`` (``c(h .) == 0``) uses ``P_{k-1}(w | h')`` with full
  weight. A context shorter than ``order - 1`` (the start of a scored sequence) is scored with
  the order ``len(context) + 1`` estimate.
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


# --- argument validation -----------------------------------------------------------------------
def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise RnnlmError(f"{name} must be an integer, got {v!r}")
    if v < 1:
        raise RnnlmError(f"{name} must be >= 1, got {v}")
    return int(v)


def _as_ids(tokens: Any, vocab_size: int, what: str = "tokens") -> np.ndarray:
    """``tokens`` as a 1-D integer array (its own dtype: no copy), every id checked to lie in ``[0, vocab_size)``."""
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


# --- unigram -----------------------------------------------------------------------------------
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
        self.counts: np.ndarray | None = None
        self._probs: np.ndarray | None = None
        self._log_probs: np.ndarray | None = None

    def fit(self, tokens: Any) -> UnigramLM:
        ids = _as_ids(tokens, self.vocab_size)
        self.counts = np.bincount(ids, minlength=self.vocab_size).astype(np.int64)
        probs = (self.counts + self.alpha) / (ids.size + self.alpha * self.vocab_size)
        self._probs = probs.astype(np.float64)
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


# --- interpolated Kneser-Ney -------------------------------------------------------------------
class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram model (see the module docstring).

    After ``fit``: ``discounts[k-1]`` is the discount of order ``k``; ``counts[k-1]`` maps each
    k-gram (tuple of ints) to its raw count (k == order) or continuation count (k < order).
    """

    def __init__(self, order: int, vocab_size: int):
        self.order = _positive_int("order", order)
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        self.discounts: list[float] = []
        self.counts: list[dict[tuple[int, ...], int]] = []
        # _levels[k-1]: context tuple (length k-1) -> (children {w: count}, 1 / total, backoff weight)
        self._levels: list[dict[tuple[int, ...], tuple[dict[int, int], float, float]]] = []
        self._fitted = False

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, tokens: Any) -> KneserNeyLM:
        ids = _as_ids(tokens, self.vocab_size)
        seq = ids.tolist()
        n = self.order
        # Raw counts of the highest order; distinct k-grams for every order (from raw occurrences).
        # islice, not seq[i:]: n shifted views of the corpus, not n copies of it
        raw_top = Counter(zip(*(itertools.islice(seq, i, None) for i in range(n)))) if len(seq) >= n else Counter()
        counts: list[dict[tuple[int, ...], int]] = [dict() for _ in range(n)]
        counts[n - 1] = dict(raw_top)
        distinct_above = raw_top.keys()
        for k in range(n - 1, 0, -1):
            # Continuation count of a k-gram: number of distinct (k+1)-grams it ends.
            cont: Counter = Counter(g[1:] for g in distinct_above)
            if len(seq) >= k:
                cont[tuple(seq[:k])] += 1  # corpus start = one extra distinct left context
            counts[k - 1] = dict(cont)
            if k > 1:
                # Distinct k-grams of the corpus = keys of cont (each occurrence of a k-gram is
                # either at the corpus start or the suffix of some (k+1)-gram occurrence).
                distinct_above = cont.keys()

        discounts = []
        levels = []
        for k in range(1, n + 1):
            cnt = counts[k - 1]
            vals = list(cnt.values())
            n1, n2 = vals.count(1), vals.count(2)
            d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
            d = min(max(d, DISCOUNT_MIN), DISCOUNT_MAX)
            discounts.append(d)
            children: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)  # context -> {next id: count}
            totals: Counter = Counter()
            for g, c in cnt.items():
                children[g[:-1]][g[-1]] = c
                totals[g[:-1]] += c
            levels.append({h: (ch, (inv := 1.0 / totals[h]), d * len(ch) * inv) for h, ch in children.items()})

        self.counts = counts
        self.discounts = discounts
        self._levels = levels
        self._fitted = True
        return self

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RnnlmError("KneserNeyLM: call fit() before asking for probabilities")

    # -- scoring ------------------------------------------------------------------------------
    def _prob(self, ctx: tuple[int, ...], w: int) -> float:
        """P(w | ctx) with ``ctx`` already cut to at most order-1 ids (no validation)."""
        p = 1.0 / self.vocab_size
        levels, discounts = self._levels, self.discounts
        L = len(ctx)
        for k in range(L + 1):  # context length k, model order k + 1
            entry = levels[k].get(ctx[L - k :] if k else ())
            if entry is None:
                break  # unseen context: every longer context is unseen too -> lower order, full weight
            ch, inv, gamma = entry
            c = ch.get(w, 0)
            p = (c - discounts[k]) * inv + gamma * p if c else gamma * p
        return p

    def token_log_probs(self, tokens: Any, history: Any = ()) -> np.ndarray:
        """Natural-log probability of each of ``tokens``, conditioned on up to order-1 preceding
        ids; ``history`` (ids that precede ``tokens``) is used as context only."""
        self._check_fitted()
        ids = _as_ids(tokens, self.vocab_size).tolist()
        m = self.order - 1
        hist = _as_ids(history, self.vocab_size, "history").tolist()
        hist = hist[max(0, len(hist) - m) :] if m > 0 else []
        seq = hist + ids
        probs = [self._prob(tuple(seq[max(0, i - m) : i]), seq[i]) for i in range(len(hist), len(seq))]
        return np.log(np.array(probs, dtype=np.float64))
