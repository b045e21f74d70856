"""The neural cache (rnnlm.cache): the formula by hand, left-to-right scoring, fitting on val alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlm import cache
from rnnlm.models import RNNLM


def test_cache_probabilities_match_the_formula_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    y = np.array([5, 7, 5, 7])
    theta = 0.5
    lp = cache.cache_log_probs(h, y, window=10, theta=theta)
    assert math.isnan(lp[0])  # nothing before the first target
    assert lp[1] == -math.inf  # 7 never followed an earlier output
    # target 2 (5): outputs 0 and 1 came before, followed by 5 and 7
    s = [math.exp(theta * float(h[2] @ h[i])) for i in range(2)]
    assert lp[2] == pytest.approx(math.log(s[0] / sum(s)), rel=1e-12)
    s = [math.exp(theta * float(h[3] @ h[i])) for i in range(3)]
    assert lp[3] == pytest.approx(math.log(s[1] / sum(s)), rel=1e-12)
    # a window of 2 sees only the two outputs just before: target 3 (7) sees outputs 1 and 2
    lp2 = cache.cache_log_probs(h, y, window=2, theta=theta)
    s = [math.exp(theta * float(h[3] @ h[i])) for i in (1, 2)]
    assert lp2[3] == pytest.approx(math.log(s[0] / sum(s)), rel=1e-12) and lp2[2] == lp[2]
    assert cache.cache_log_probs(h, y, window=1, theta=theta)[3] == -math.inf  # output 2 was followed by 5


def test_the_mixture_is_the_model_where_the_cache_is_empty_and_sums_to_one():
    model_lp = np.log(np.array([0.2, 0.5, 0.25]))
    cache_lp = np.array([np.nan, -np.inf, np.log(0.8)])
    mixed = np.exp(cache.mix(model_lp, cache_lp, 0.25))
    assert mixed == pytest.approx([0.2, 0.75 * 0.5, 0.75 * 0.25 + 0.25 * 0.8])


def _model(cell="lstm", vocab=11):
    torch.manual_seed(0)
    return RNNLM(cell, "torch", vocab, hidden=16, layers=1, dropout=0.0, embedding=8)


def test_scores_never_depend_on_later_text():
    """A split scored with the text after it appended gives the same scores for its own targets:
    the cache (and the model) read left to right, each token scored before it is in the cache."""
    rng = np.random.default_rng(0)
    text = rng.integers(0, 11, 300)
    longer = np.concatenate([text, rng.integers(0, 11, 200)])
    model = _model()
    h, lp = cache.outputs_and_log_probs(model, text, num_steps=7)
    h2, lp2 = cache.outputs_and_log_probs(model, longer, num_steps=64)
    assert torch.allclose(h, h2[: len(h)], atol=1e-6) and np.allclose(lp, lp2[: len(lp)], atol=1e-6)
    for window, theta in ((5, 0.3), (2000, 1.0)):
        short = cache.cache_log_probs(h, text[1:], window, theta)
        long = cache.cache_log_probs(h2, longer[1:], window, theta)[: len(short)]
        assert np.allclose(short, long, atol=1e-6, equal_nan=True)


def test_the_model_log_probs_are_the_evaluate_stages():
    from rnnlm.metrics import model_token_nll

    tokens = np.random.default_rng(1).integers(0, 11, 200)
    model = _model("gru")
    _, lp = cache.outputs_and_log_probs(model, tokens)
    assert np.array_equal(lp, -model_token_nll(model, tokens, 1, 64))


def test_a_repetitive_text_gets_a_cache_that_helps_and_the_fit_reads_val_alone():
    """A text that repeats a phrase: the fitted cache has weight > 0 and lowers the perplexity;
    the fit takes only val's outputs, so no test text can change it."""
    rng = np.random.default_rng(2)
    phrase = rng.integers(0, 11, 12)
    val = np.concatenate([np.concatenate([phrase, rng.integers(0, 11, 3)]) for _ in range(12)])
    model = _model()
    h, lp = cache.outputs_and_log_probs(model, val)
    fitted = cache.fit(h, val[1:], lp)
    assert set(fitted) == {"window", "theta", "weight"} and 0 < fitted["weight"] <= 1
    assert fitted["window"] in cache.WINDOWS and fitted["theta"] in cache.THETAS
    mixed = cache.mix(lp, cache.cache_log_probs(h, val[1:], fitted["window"], fitted["theta"]), fitted["weight"])
    assert mixed.sum() > lp.sum()
