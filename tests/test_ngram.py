"""Tests for rnnlm.ngram: add-alpha unigram and interpolated Kneser-Ney baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ngram_helpers import distribution, log_prob, perplexity_of, prob

from rnnlm.errors import RnnlmError
from rnnlm.ngram import DISCOUNT_MAX, DISCOUNT_MIN, KneserNeyLM, UnigramLM

V_TOY = 6
# Toy corpus over ids 0..5; id 5 never occurs.
TOY = np.array([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 2, 0, 1, 2, 3, 3, 0, 4, 1, 2], dtype=np.int64)

CONTEXTS = {
    "empty": (),
    "seen": (0, 1, 2),  # occurs in TOY
    "seen_short": (1,),
    "partly_seen": (5, 0, 1),  # 5 never occurs, suffix (0, 1) does
    "partly_seen2": (3, 4, 2),  # (3, 4) never occurs, suffix (4, 2) does
    "never_seen": (5, 5, 5),
    "long": (4, 4, 4, 4, 0, 1),  # longer than any order-1: only the tail is used
}


def naive_kn_prob(corpus, order, vocab, ctx, w):
    """Independent, slow reference: interpolated KN straight from the definitions.

    Highest order: raw counts; lower orders: continuation counts N1+(. g) = number of distinct
    left neighbours of g in the corpus, where the corpus start counts as one distinct neighbour.
    """
    seq = [int(x) for x in corpus]

    def occurrences(g):
        k = len(g)
        return [i for i in range(len(seq) - k + 1) if tuple(seq[i : i + k]) == g]

    def count(g, k):
        if k == order:
            return len(occurrences(g))
        return len({seq[i - 1] if i > 0 else "<start>" for i in occurrences(g)})

    def all_grams(k):
        return {tuple(seq[i : i + k]) for i in range(len(seq) - k + 1)}

    def discount(k):
        cs = [count(g, k) for g in all_grams(k)]
        n1, n2 = cs.count(1), cs.count(2)
        d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
        return min(max(d, DISCOUNT_MIN), DISCOUNT_MAX)

    def p(h, k):  # order k, len(h) == k - 1
        if k == 0:
            return 1.0 / vocab
        lower = p(h[1:], k - 1)
        followers = {g[-1]: count(g, k) for g in all_grams(k) if g[:-1] == h}
        total = sum(followers.values())
        if total == 0:
            return lower
        d = discount(k)
        return max(followers.get(w, 0) - d, 0) / total + d * len(followers) / total * lower

    h = tuple(ctx)[max(0, len(ctx) - (order - 1)) :] if order > 1 else ()
    return p(h, len(h) + 1)


@pytest.fixture(scope="module")
def toy_models():
    return {n: KneserNeyLM(n, V_TOY).fit(TOY) for n in range(1, 5)}


# ---------------------------------------------------------------------------------------------
# Kneser-Ney: normalisation, consistency
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", list(CONTEXTS))
def test_distribution_sums_to_one_and_positive(toy_models, order, name):
    dist = distribution(toy_models[order], CONTEXTS[name])
    assert dist.shape == (V_TOY,)
    assert dist.dtype == np.float64
    assert abs(dist.sum() - 1.0) < 1e-9
    assert (dist > 0).all()
    assert dist[5] > 0  # never-seen id still has mass


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", list(CONTEXTS))
def test_matches_naive_reference(toy_models, order, name):
    model = toy_models[order]
    ctx = CONTEXTS[name]
    dist = distribution(model, ctx)
    for w in range(V_TOY):
        ref = naive_kn_prob(TOY, order, V_TOY, ctx, w)
        assert prob(model, ctx, w) == pytest.approx(ref, rel=1e-12, abs=1e-15)
        assert dist[w] == pytest.approx(ref, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_prob_equals_distribution_entry(toy_models, order):
    model = toy_models[order]
    for ctx in CONTEXTS.values():
        dist = distribution(model, ctx)
        for w in range(V_TOY):
            assert prob(model, ctx, w) == pytest.approx(dist[w], rel=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_log_prob_is_sum_of_token_log_probs(toy_models, order):
    model = toy_models[order]
    test_seq = np.array([0, 1, 2, 5, 3, 0, 1, 4, 4, 2, 0], dtype=np.int64)
    history = np.array([3, 3, 2, 0, 1], dtype=np.int64)
    m = order - 1

    expected = sum(
        math.log(prob(model, test_seq[max(0, i - m) : i].tolist(), int(test_seq[i]))) for i in range(len(test_seq))
    )
    assert log_prob(model, test_seq) == pytest.approx(expected, rel=1e-12)

    full = np.concatenate([history, test_seq])
    off = len(history)
    expected_h = sum(
        math.log(prob(model, full[max(0, i - m) : i].tolist(), int(full[i]))) for i in range(off, len(full))
    )
    assert log_prob(model, test_seq, history=history) == pytest.approx(expected_h, rel=1e-12)
    if order > 1:  # history really is used as context
        assert log_prob(model, test_seq, history=history) != pytest.approx(expected, rel=1e-9)
    # histories of every length, including shorter than order - 1
    for n_hist in range(len(history) + 1):
        hist = history[len(history) - n_hist :]
        full = np.concatenate([hist, test_seq])
        expected_n = sum(
            math.log(prob(model, full[max(0, i - m) : i].tolist(), int(full[i]))) for i in range(n_hist, len(full))
        )
        assert log_prob(model, test_seq, history=hist) == pytest.approx(expected_n, rel=1e-12)
    assert perplexity_of(model, test_seq, history) == pytest.approx(math.exp(-expected_h / len(test_seq)), rel=1e-12)


def test_only_last_order_minus_one_context_ids_matter(toy_models):
    model = toy_models[3]
    np.testing.assert_allclose(distribution(model, [4, 4, 0, 1]), distribution(model, [0, 1]), rtol=0, atol=0)
    np.testing.assert_allclose(distribution(model, [3, 0, 1]), distribution(model, [5, 0, 1]), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Kneser-Ney: hand-computed case
# ---------------------------------------------------------------------------------------------
def test_hand_computed_bigram():
    # corpus 0 1 0 1 2, vocab 3, order 2
    model = KneserNeyLM(2, 3).fit([0, 1, 0, 1, 2])
    # bigram raw counts: (0,1)=2, (1,0)=1, (1,2)=1 -> n1=2, n2=1 -> D2 = 2 / (2 + 2*1) = 0.5
    assert model.counts[1] == {(0, 1): 2, (1, 0): 1, (1, 2): 1}
    d2 = 2 / (2 + 2 * 1)
    # unigram continuation counts (distinct left neighbours; corpus start counts as one):
    #   0: {start, 1} -> 2 ;  1: {0} -> 1 ;  2: {1} -> 1   total 4, 3 types
    #   counts-of-counts n1=2, n2=1 -> D1 = 0.5
    assert model.counts[0] == {(0,): 2, (1,): 1, (2,): 1}
    d1 = 2 / (2 + 2 * 1)
    assert model.discounts == pytest.approx([d1, d2])
    uniform = 1 / 3
    p1 = {w: (c - d1) / 4 + d1 * 3 / 4 * uniform for w, c in {0: 2, 1: 1, 2: 1}.items()}
    assert p1 == pytest.approx({0: 0.5, 1: 0.25, 2: 0.25})
    # P(1 | 0): c(0 .) = 2, one follower type
    p_1_0 = (2 - d2) / 2 + d2 * 1 / 2 * p1[1]
    assert p_1_0 == pytest.approx(0.8125)
    assert prob(model, [0], 1) == pytest.approx(p_1_0, rel=1e-12)
    # P(2 | 1): c(1 .) = 2, two follower types (0 and 2)
    p_2_1 = (1 - d2) / 2 + d2 * 2 / 2 * p1[2]
    assert p_2_1 == pytest.approx(0.375)
    assert prob(model, [1], 2) == pytest.approx(p_2_1, rel=1e-12)
    # P(2 | 0): unseen bigram, only the interpolated lower-order mass
    assert prob(model, [0], 2) == pytest.approx(d2 * 1 / 2 * p1[2], rel=1e-12)
    # context (2,) never seen as a context -> unigram continuation distribution
    np.testing.assert_allclose(distribution(model, [2]), [p1[0], p1[1], p1[2]], rtol=1e-12)
    # empty context -> the lower-order (continuation) distribution as well
    np.testing.assert_allclose(distribution(model, []), [p1[0], p1[1], p1[2]], rtol=1e-12)


def test_order_one_is_discounted_unigram_with_uniform():
    model = KneserNeyLM(1, 4).fit([0, 0, 0, 1, 2, 2])
    # raw counts 3, 1, 2, 0 -> n1=1, n2=1 -> D = 1/3
    d = 1 / (1 + 2)
    assert model.discounts == pytest.approx([d])
    n, types = 6, 3
    expected = np.array([(3 - d) / n, (1 - d) / n, (2 - d) / n, 0.0]) + d * types / n / 4
    np.testing.assert_allclose(distribution(model, [1, 2, 3]), expected, rtol=1e-12)
    np.testing.assert_allclose(distribution(model, ()), expected, rtol=1e-12)
    assert log_prob(model, [3, 0]) == pytest.approx(math.log(expected[3]) + math.log(expected[0]))


# ---------------------------------------------------------------------------------------------
# Kneser-Ney: back-off behaviour and usefulness
# ---------------------------------------------------------------------------------------------
def test_unseen_context_backs_off_to_lower_order(toy_models):
    model = toy_models[3]
    # (5, 5) and (5,) never occur: order-3 estimate = order-1 estimate (empty context)
    np.testing.assert_allclose(distribution(model, [5, 5]), distribution(model, []), rtol=1e-12)
    # (5, 0) never occurs but (0,) does: equals the bigram estimate given 0
    np.testing.assert_allclose(distribution(model, [5, 0]), distribution(model, [0]), rtol=1e-12)
    # ... and that is a real bigram estimate, not the unigram one
    assert not np.allclose(distribution(model, [0]), distribution(model, []))
    # a seen context differs from its backed-off version
    assert not np.allclose(distribution(model, [0, 1]), distribution(model, [1]))


def test_unseen_everything_is_uniform():
    model = KneserNeyLM(3, 7).fit([])
    np.testing.assert_allclose(distribution(model, [1, 2]), np.full(7, 1 / 7), rtol=1e-12)
    assert log_prob(model, [0, 6, 3]) == pytest.approx(3 * math.log(1 / 7))


def test_higher_order_beats_unigram_on_periodic_data():
    rng = np.random.default_rng(0)
    vocab = 12
    pattern = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7])

    def make(n):
        seq = np.resize(pattern, n).copy()
        noise = rng.random(n) < 0.1
        seq[noise] = rng.integers(0, vocab, noise.sum())
        return seq

    train, held_out = make(3000), make(1000)
    ppl_uni = perplexity_of(UnigramLM(vocab).fit(train), held_out)
    ppl_kn1 = perplexity_of(KneserNeyLM(1, vocab).fit(train), held_out)
    ppl_kn2 = perplexity_of(KneserNeyLM(2, vocab).fit(train), held_out)
    ppl_kn4 = perplexity_of(KneserNeyLM(4, vocab).fit(train), held_out)
    assert ppl_kn1 == pytest.approx(ppl_uni, rel=0.05)  # both plain unigrams
    assert ppl_kn2 < 0.8 * ppl_uni
    assert ppl_kn4 < ppl_kn2
    assert ppl_kn4 < 3.0  # the pattern is mostly deterministic given 3 previous ids


def test_refit_replaces_previous_counts():
    model = KneserNeyLM(2, 3).fit([0, 0, 0, 0])
    model.fit([1, 2, 1, 2])
    assert (0, 0) not in model.counts[1]
    assert prob(model, [1], 2) > prob(model, [1], 0)


# ---------------------------------------------------------------------------------------------
# UnigramLM
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.5, 3])
def test_unigram_add_alpha(alpha):
    tokens = [0, 1, 1, 2, 2, 2]
    model = UnigramLM(5, alpha=alpha).fit(np.array(tokens))
    dist = distribution(model)
    assert dist.shape == (5,)
    assert abs(dist.sum() - 1.0) < 1e-12
    counts = np.array([1, 2, 3, 0, 0])
    expected = (counts + alpha) / (len(tokens) + alpha * 5)
    np.testing.assert_allclose(dist, expected, rtol=1e-12)
    assert (dist > 0).all()
    np.testing.assert_allclose(distribution(model, [4, 4]), expected, rtol=1e-12)  # context ignored
    assert log_prob(model, [3, 2]) == pytest.approx(math.log(expected[3]) + math.log(expected[2]))
    assert log_prob(model, [3, 2], history=[0, 1]) == pytest.approx(log_prob(model, [3, 2]))
    assert perplexity_of(model, [2, 2]) == pytest.approx(1 / expected[2])


# ---------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: KneserNeyLM(0, 5),
        lambda: KneserNeyLM(-2, 5),
        lambda: KneserNeyLM(2.5, 5),
        lambda: KneserNeyLM(2, 0),
        lambda: KneserNeyLM(2, "5"),
        lambda: UnigramLM(0),
        lambda: UnigramLM(5, alpha=0),
        lambda: UnigramLM(5, alpha=-1.0),
        lambda: UnigramLM(5, alpha=float("nan")),
    ],
)
def test_bad_constructor_arguments(make):
    with pytest.raises(RnnlmError):
        make()


@pytest.mark.parametrize("model_cls", [lambda: KneserNeyLM(2, 4), lambda: UnigramLM(4)])
@pytest.mark.parametrize(
    "bad",
    [[0, 1, 4], [0, -1, 2], [0.5, 1.0], [[0, 1], [1, 2]], np.array([True, False])],
)
def test_bad_tokens_in_fit(model_cls, bad):
    with pytest.raises(RnnlmError):
        model_cls().fit(bad)


def test_bad_ids_when_scoring():
    model = KneserNeyLM(3, 4).fit([0, 1, 2, 3, 0, 1])
    with pytest.raises(RnnlmError, match=r"outside \[0, 4\)"):
        prob(model, [0, 1], 4)
    with pytest.raises(RnnlmError):
        prob(model, [0, 9], 1)
    with pytest.raises(RnnlmError):
        distribution(model, [-1])
    with pytest.raises(RnnlmError):
        log_prob(model, [0, 5])
    with pytest.raises(RnnlmError):
        log_prob(model, [0, 1], history=[7])
    with pytest.raises(RnnlmError):
        perplexity_of(model, [])
    uni = UnigramLM(4).fit([0, 1])
    with pytest.raises(RnnlmError):
        log_prob(uni, [4])


def test_use_before_fit_raises():
    with pytest.raises(RnnlmError, match="fit"):
        prob(KneserNeyLM(2, 3), [0], 1)
    with pytest.raises(RnnlmError, match="fit"):
        distribution(UnigramLM(3))
