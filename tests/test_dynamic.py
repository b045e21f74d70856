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
    model.train()
    ms = dynamic.mean_squared_grads(model, tokens)
    assert model.training and all(p.grad is None for p in model.parameters())  # the caller's model as it was
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
    fitted, val_lp = dynamic.fit(model, val, ms)
    assert fitted["eta"] in (*dynamic.ETAS, *dynamic.LARGER) and fitted["decay"] in dynamic.DECAYS
    assert np.array_equal(val_lp, dynamic.log_probs(model, val, ms, **fitted))  # the fit's own pass, returned
    assert val_lp.sum() > -model_token_nll(model, val, 1, 64).sum() + 30


def test_the_fit_reads_the_val_prefix_and_scores_all_of_val(monkeypatch):
    """On a val split longer than FIT_TOKENS the grid sees only its first FIT_TOKENS targets
    (what follows cannot change the fitted setting), and the returned log-probs cover all of val."""
    rng = np.random.default_rng(4)
    model = _model()
    ms = dynamic.mean_squared_grads(model, rng.integers(0, 11, 500))
    monkeypatch.setattr(dynamic, "FIT_TOKENS", 60)
    val = rng.integers(0, 11, 200)
    other = np.concatenate([val[:61], rng.integers(0, 11, 139)])
    fitted, val_lp = dynamic.fit(model, val, ms)
    assert dynamic.fit(model, other, ms)[0] == fitted
    assert len(val_lp) == 199 and np.array_equal(val_lp, dynamic.log_probs(model, val, ms, **fitted))


def test_a_token_that_training_text_never_showed_does_not_blow_the_model_up():
    """A model trained on tokens 0-9 gives the others a tiny probability, so their output rows
    have a near-zero MS; unfloored, one of them showing up took a step large enough to wreck the
    model (-3083 nats here at eta 1e-3, against -1386 without steps). Floored, every eta helps."""
    rng = np.random.default_rng(3)
    torch.manual_seed(0)
    model = RNNLM("lstm", "torch", 60, hidden=16, layers=1, dropout=0.0, embedding=8)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    train = torch.as_tensor(rng.integers(0, 10, 2000))
    for i in range(150):
        a = (i * 50) % 1900
        nll, _ = model.token_nll(train[None, a : a + 50], train[None, a + 1 : a + 51])
        optimizer.zero_grad()
        nll.mean().backward()
        optimizer.step()
    ms = dynamic.mean_squared_grads(model, train.numpy())
    text = np.concatenate([rng.integers(0, 10, 200), rng.integers(0, 60, 100)])
    plain = -model_token_nll(model, text, 1, 64).sum()
    for eta in dynamic.ETAS:
        assert dynamic.log_probs(model, text, ms, eta=eta, decay=0.0).sum() > plain


def test_where_every_step_size_hurts_the_fit_keeps_the_model_as_trained(monkeypatch):
    """eta 0 is in the fit: with only a step size that wrecks the model on offer, the fitted
    setting is no adaptation, and its log-probs are the model's own (one forward pass)."""
    rng = np.random.default_rng(5)
    model = _model()
    ms = dynamic.mean_squared_grads(model, rng.integers(0, 11, 500))
    monkeypatch.setattr(dynamic, "ETAS", (30.0,))
    val = rng.integers(0, 11, 300)
    fitted, val_lp = dynamic.fit(model, val, ms)
    assert fitted == {"eta": 0.0, "decay": 0.0}
    np.testing.assert_allclose(val_lp, -model_token_nll(model, val, 1, 64), rtol=0, atol=1e-9)
    assert dynamic.log_probs(model, val, ms, 30.0, 0.0).sum() < val_lp.sum()


@pytest.mark.parametrize(
    "best,tried", [(1e-3, [0.0, 1e-4, 3e-4, 1e-3, 3e-3]), (1e-2, [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])]
)
def test_larger_step_sizes_are_tried_only_while_the_largest_wins(monkeypatch, best, tried):
    """The grid goes past its largest eta only when that one fits best, and stops at the first
    larger eta that fits worse."""
    calls = []

    def fake(model, tokens, ms, eta, decay, device="cpu", segment=dynamic.SEGMENT):
        calls.append((eta, decay))
        return np.full(len(tokens) - 1, -abs(np.log((eta or 1e-9) / best)))  # the likelihood peaks at `best`

    monkeypatch.setattr(dynamic, "log_probs", fake)
    fitted, _ = dynamic.fit(None, np.zeros(50, dtype=np.int64), None)
    assert fitted["eta"] == best and [eta for eta, decay in calls if decay == 0.0][: len(tried)] == tried
    assert {eta for eta, _ in calls} == {*tried}  # nothing beyond the first larger eta that lost
