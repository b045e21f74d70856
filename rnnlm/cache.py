"""A neural cache (Grave, Joulin & Usunier 2017, "Improving Neural Language Models with a
Continuous Cache"): the model's last-layer output h_t points back at the tokens that followed
similar outputs earlier in the same text,

    p_cache(w | t) = sum_{t-W <= i < t, y_i = w} exp(theta h_t . h_i) / sum_{t-W <= i < t} exp(theta h_t . h_i)
    p(w | t)       = (1 - lam) p_model(w | t) + lam p_cache(w | t)

where y_i is the target that followed h_i. The text is scored left to right: a token's probability
uses only the tokens before it, so appending text never changes an earlier score. The window W,
theta and lam are fitted on the val split alone (W and theta on a grid, lam by EM), then applied
to test. Where the cache is still empty (the first target) the mixture is the model alone.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import mixture_log_probs, mixture_weight

WINDOWS = (100, 500, 2000)  # the grid of W and theta fitted on val
THETAS = (0.03, 0.1, 0.3, 1.0)
BLOCK = 256  # targets scored per matrix product


@torch.no_grad()
def outputs_and_log_probs(
    model, tokens: np.ndarray, device="cpu", num_steps: int = 64
) -> tuple[torch.Tensor, np.ndarray]:
    """The model's last-layer output h_t (float32, on the CPU) and log p_model of each target
    tokens[t + 1], walking the text in order from a zero state (exact: full context), dropout off."""
    was_training = model.training
    model.eval()
    ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device)[None]
    state, hs, lps = None, [], []
    for i in range(0, ids.shape[1] - 1, num_steps):
        Y = ids[:, i + 1 : i + 1 + num_steps]
        h, state = model.features(ids[:, i : i + Y.shape[1]], state)  # (time, 1, hidden)
        hs.append(h[:, 0].float().cpu())
        lps.append(-model.output_nll(h, Y)[0].double().cpu())
    model.train(was_training)
    return torch.cat(hs), torch.cat(lps).numpy()


def cache_log_probs(h: torch.Tensor, targets: np.ndarray, window: int, theta: float) -> np.ndarray:
    """log p_cache of each target (-inf where it is not in the window; nan where the window is empty)."""
    n = len(targets)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    out = torch.empty(n, dtype=torch.float64)
    for a in range(0, n, BLOCK):
        b, lo = min(a + BLOCK, n), max(0, a - window)
        scores = theta * (h[a:b] @ h[lo:b].T).double()  # (targets, earlier outputs)
        t, i = torch.arange(a, b)[:, None], torch.arange(lo, b)[None]
        scores = scores.masked_fill((i >= t) | (i < t - window), -torch.inf)
        same = y[lo:b][None] == y[a:b][:, None]
        out[a:b] = torch.logsumexp(scores.masked_fill(~same, -torch.inf), 1) - torch.logsumexp(scores, 1)
    return out.numpy()


def mix(model_lp: np.ndarray, cache_lp: np.ndarray, lam: float) -> np.ndarray:
    """log((1 - lam) p_model + lam p_cache); the model alone where the cache is empty (nan)."""
    cache_lp = np.where(np.isnan(cache_lp), model_lp, cache_lp)
    return mixture_log_probs(cache_lp, model_lp, lam)


def fit(h: torch.Tensor, targets: np.ndarray, model_lp: np.ndarray) -> dict:
    """{"window", "theta", "weight"} maximising the likelihood of the (val) targets."""
    best = None
    for window in WINDOWS:
        for theta in THETAS:
            cache_lp = cache_log_probs(h, targets, window, theta)
            lam = mixture_weight(np.where(np.isnan(cache_lp), model_lp, cache_lp), model_lp)
            ll = float(mix(model_lp, cache_lp, lam).sum())
            if best is None or ll > best[0]:
                best = (ll, {"window": window, "theta": theta, "weight": round(lam, 6)})
    return best[1]
