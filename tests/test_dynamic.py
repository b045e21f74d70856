"""Dynamic evaluation (rnnlm.dynamic): left-to-right scoring, the trained model left alone, a gain
on text that repeats, settings fitted on val alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlm import dynamic
from rnnlm.metrics import model_token_nll
from rnnlm.models import RNNLM


def _model(cell="lstm", impl="torch", vocab=11):
    torch.manual_seed(0)
    return RNNLM(cell, impl, vocab, hidden=16, layers=1, dropout=0.0, embedding=8)


@pytest.mark.parametrize("cell,impl", [("lstm", "torch"), ("gru", "scratch")])
def test_without_steps_it_is_the_model_and_the_model_is_left_unchanged(cell, impl):
    tokens = np.random.default_rng(0).integers(0, 11, 150)
    model = _model(cell, impl)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ms = dynamic.mean_squared_grads(model, tokens)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    still = dynamic.log_probs(model, tokens, ms, eta=0.0, decay=0.0)
    assert np.allclose(still, -model_token_nll(model, tokens, 1, 64), atol=1e-6)
    moved = dynamic.log_probs(model, tokens, ms, eta=1e-2, decay=0.0)
    assert moved[: dynamic.SEGMENT] == pytest.approx(still[: dynamic.SEGMENT])  # the first segment: no step yet
    assert not np.allclose(moved, still)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_scores_never_depend_on_later_text():
    rng = np.random.default_rng(1)
    text = rng.integers(0, 11, 230)
    longer = np.concatenate([text, rng.integers(0, 11, 100)])
    model = _model()
    ms = dynamic.mean_squared_grads(model, rng.integers(0, 11, 500))
    short = dynamic.log_probs(model, text, ms, eta=3e-3, decay=0.02)
    assert np.allclose(short, dynamic.log_probs(model, longer, ms, eta=3e-3, decay=0.02)[: len(short)], atol=1e-9)


def test_a_repetitive_text_is_learned_and_the_fit_reads_val_alone():
    rng = np.random.default_rng(2)
    phrase = rng.integers(0, 11, 15)
    val = np.tile(phrase, 40)
    model = _model()
    ms = dynamic.mean_squared_grads(model, rng.integers(0, 11, 500))
    fitted = dynamic.fit(model, val, ms)
    assert fitted["eta"] in dynamic.ETAS and fitted["decay"] in dynamic.DECAYS
    assert dynamic.log_probs(model, val, ms, **fitted).sum() > -model_token_nll(model, val, 1, 64).sum() + 30
