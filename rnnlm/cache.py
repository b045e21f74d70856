"""A neural cache (Grave, Joulin & Usunier 2017, "Improving Neural Language Models with a
Continuous Cache"): the model's last-layer output h_t points back at the tokens that followed
similar outputs earlier in the same text,

    p_cache(w | t) = sum_{t-W <= i < t, y_i = w} exp(theta h_t . h_i) / sum_{t-W <= i < t} exp(theta h_t . h_i)
    p(w | t)       = (1 - lam) p_model(w | t) + lam p_cache(w | t)

where y_i is the target that followed h_i. The text is scored left to right: a token's probability
uses only the tokens before it, so appending text never changes an earlier score. The window W,
theta and lam are fitted on the val split alone (W and theta on a grid, lam by EM), then applied
to test. Where the cache is still empty (the first target) the mixture is the model alone.

One pass over a split scores every (W, theta) of the grid at once, keeping only the last
max(W) outputs: memory grows with the grid times the split, not with the hidden size.
"""

from __future__ import annotations

import numpy as np
import torch

from .batching import segments
from .metrics import mixture_log_probs, mixture_weight

WINDOWS = (100, 500, 2000)  # the grid of W and theta fitted on val
THETAS = (0.03, 0.1, 0.3, 1.0)
GRID = [(w, theta) for w in WINDOWS for theta in THETAS]
NUM_STEPS = 64  # targets per model call (the evaluate stage's chunk: the same model scores)


@torch.no_grad()
def log_probs(model, tokens: np.ndarray, settings, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """log p_model of each target tokens[t + 1] (the text read in order from a zero state, dropout
    off), and log p_cache under each (window, theta) of ``settings``: (len(settings), targets)."""
    was_training = model.training
    model.eval()
    n, keep = len(tokens) - 1, max(w for w, _ in settings)
    model_lp, cache_lp = np.empty(n), np.empty((len(settings), n))
    keys, key_y, state, a = torch.empty(0, model.hidden), torch.empty(0, dtype=torch.long), None, 0
    for X, Y in segments(tokens, NUM_STEPS, device):
        h, state = model.features(X, state)  # (time, 1, hidden)
        b = a + Y.shape[1]
        model_lp[a:b] = -model.output_nll(h, Y)[0].cpu().double().numpy()  # mps: no float64
        keys, key_y = torch.cat([keys, h[:, 0].float().cpu()]), torch.cat([key_y, Y[0].cpu()])
        cache_lp[:, a:b] = block_log_probs(keys, key_y, Y.shape[1], settings)
        keys, key_y, a = keys[-keep:], key_y[-keep:], b
    model.train(was_training)
    return model_lp, cache_lp


def block_log_probs(keys: torch.Tensor, key_y: torch.Tensor, m: int, settings) -> np.ndarray:
    """log p_cache of the last ``m`` targets of ``key_y``, each from the outputs ``keys`` before
    it (-inf: not in the window; nan: the window is empty): (len(settings), m)."""
    k = len(keys)
    dots = (keys[k - m :] @ keys.T).double()  # (targets, outputs so far)
    t, i = torch.arange(k - m, k)[:, None], torch.arange(k)[None]
    same = key_y[None] == key_y[k - m :, None]
    out = np.empty((len(settings), m))
    for j, (window, theta) in enumerate(settings):
        c = slice(max(0, k - m - window), k)  # the outputs any of these targets' windows can reach
        scores = (theta * dots[:, c]).masked_fill((i[:, c] >= t) | (i[:, c] < t - window), -torch.inf)
        hits = scores.masked_fill(~same[:, c], -torch.inf)
        out[j] = (torch.logsumexp(hits, 1) - torch.logsumexp(scores, 1)).numpy()
    return out


def mix(model_lp: np.ndarray, cache_lp: np.ndarray, lam: float) -> np.ndarray:
    """log((1 - lam) p_model + lam p_cache); the model alone where the cache is empty (nan)."""
    cache_lp = np.where(np.isnan(cache_lp), model_lp, cache_lp)
    return mixture_log_probs(cache_lp, model_lp, lam)


def fit(model_lp: np.ndarray, cache_lp: np.ndarray, settings=GRID) -> dict:
    """{"window", "theta", "weight"} maximising the likelihood of the (val) targets, from
    :func:`log_probs` under every one of ``settings``."""
    best = None
    for (window, theta), lp in zip(settings, cache_lp):
        lam = mixture_weight(np.where(np.isnan(lp), model_lp, lp), model_lp)
        ll = float(mix(model_lp, lp, lam).sum())
        ll = ll if np.isfinite(ll) else -np.inf  # a weight EM could not fit (nan) loses
        if best is None or ll > best[0]:
            best = (ll, {"window": window, "theta": theta, "weight": round(lam, 6)})
    return best[1]
