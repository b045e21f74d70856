"""The neural cache (rnnlm.cache): the formula by hand, left-to-right scoring, fitting on val alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlm import cache
from rnnlm.metrics import model_token_nll
from rnnlm.models import RNNLM


def test_cache_probabilities_match_the_formula_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([5, 7, 5, 7])
    theta = 0.5
    lp, lp2, lp1 = cache.block_log_probs(h, y, 4, [(10, theta), (2, theta), (1, theta)])
    assert math.isnan(lp[0])  # nothing before the first target
    assert lp[1] == -math.inf  # 7 never followed an earlier output
    # target 2 (5): outputs 0 and 1 came before, followed by 5 and 7
    s = [math.exp(theta * float(h[2] @ h[i])) for i in range(2)]
    assert lp[2] == pytest.approx(math.log(s[0] / sum(s)), rel=1e-12)
    s = [math.exp(theta * float(h[3] @ h[i])) for i in range(3)]
    assert lp[3] == pytest.approx(math.log(s[1] / sum(s)), rel=1e-12)
    # a window of 2 sees only the two outputs just before: target 3 (7) sees outputs 1 and 2
    s = [math.exp(theta * float(h[3] @ h[i])) for i in (1, 2)]
    assert lp2[3] == pytest.approx(math.log(s[0] / sum(s)), rel=1e-12) and lp2[2] == lp[2]
    assert lp1[3] == -math.inf  # output 2 was followed by 5
    # the last targets of a longer history: the same numbers
    assert np.array_equal(cache.block_log_probs(h, y, 2, [(10, theta)])[0], lp[2:])


def test_the_mixture_is_the_model_where_the_cache_is_empty_and_sums_to_one():
    model_lp = np.log(np.array([0.2, 0.5, 0.25]))
    cache_lp = np.array([np.nan, -np.inf, np.log(0.8)])
    mixed = np.exp(cache.mix(model_lp, cache_lp, 0.25))
    assert mixed == pytest.approx([0.2, 0.75 * 0.5, 0.75 * 0.25 + 0.25 * 0.8])


def _model(cell="lstm", vocab=11):
    torch.manual_seed(0)
    return RNNLM(cell, "torch", vocab, hidden=16, layers=1, dropout=0.0, embedding=8)


def test_scores_never_depend_on_later_text_and_the_model_part_is_the_evaluate_stages():
    """A split scored with text appended gives the same scores for its own targets: the cache
    (and the model) read left to right, each token scored before it is in the cache. Streaming
    with a bounded memory of outputs gives what the formula gives over the whole text."""
    rng = np.random.default_rng(0)
    text = rng.integers(0, 11, 300)
    longer = np.concatenate([text, rng.integers(0, 11, 200)])
    model = _model()
    settings = [(5, 0.3), (100, 1.0), (2000, 0.1)]
    model_lp, cache_lp = cache.log_probs(model, text, settings)
    model_lp2, cache_lp2 = cache.log_probs(model, longer, settings)
    assert np.array_equal(model_lp, model_lp2[: len(model_lp)])
    assert np.allclose(cache_lp, cache_lp2[:, : len(model_lp)], atol=1e-9, equal_nan=True)
    assert np.array_equal(model_lp, -model_token_nll(model, text, 1, 64))
    h, _ = model.eval().features(torch.as_tensor(text[:-1], dtype=torch.long)[None])
    whole = cache.block_log_probs(h[:, 0].detach(), torch.as_tensor(text[1:]), len(text) - 1, settings)
    assert np.allclose(cache_lp, whole, atol=1e-6, equal_nan=True)


def test_a_repetitive_text_gets_a_cache_that_helps_and_the_fit_reads_val_alone():
    """A text that repeats a phrase: the fitted cache has weight > 0 and lowers the perplexity;
    the fit takes only val's scores, so no test text can change it."""
    rng = np.random.default_rng(2)
    phrase = rng.integers(0, 11, 12)
    val = np.concatenate([np.concatenate([phrase, rng.integers(0, 11, 3)]) for _ in range(12)])
    model_lp, cache_lp = cache.log_probs(_model(), val, cache.GRID)
    fitted = cache.fit(model_lp, cache_lp)
    assert set(fitted) == {"window", "theta", "weight"} and 0 < fitted["weight"] <= 1
    assert (fitted["window"], fitted["theta"]) in cache.GRID
    chosen = cache_lp[cache.GRID.index((fitted["window"], fitted["theta"]))]
    assert cache.mix(model_lp, chosen, fitted["weight"]).sum() > model_lp.sum()


def test_a_setting_whose_weight_cannot_be_fitted_is_never_chosen():
    """Model and cache both ~0 on one target: EM's weight is 0/0 = nan there; that setting loses."""
    model_lp = np.array([-1.0, -800.0, -2.0])
    cache_lp = np.array([[np.nan, -800.0, -1.0], [np.nan, -1.0, -0.5]])
    fitted = cache.fit(model_lp, cache_lp, [(1, 1.0), (2, 1.0)])
    assert fitted["window"] == 2 and np.isfinite(fitted["weight"])
