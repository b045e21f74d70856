"""Tests for rnnlm.transformer: causality, the sliding window, the state, saving, params, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import committed_params, config, save_model_file

from rnnlm import cache, dynamic
from rnnlm import sample as gen
from rnnlm.checkpoint import load_checkpoint, load_model
from rnnlm.errors import ParamError
from rnnlm.metrics import model_token_nll
from rnnlm.models import build
from rnnlm.params import TransformerConfig, load_model_config, validate_all, validate_section
from rnnlm.train import Trainer, TrainPaths
from rnnlm.vocab import Vocab, tokenize

V = 13


def make(context=8, seed=0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = dict(cell="transformer", vocab_size=V, d_model=16, layers=2, heads=2, context=context, dropout=0.0)
    cfg |= dict(tie_weights=True, softmax="full", cutoffs=[]) | kw
    return build(cfg).double().eval()


def pieces(model, X, Y, cuts):
    """token_nll of (X, Y) read in pieces of the given lengths, the state carried."""
    state, out, i = None, [], 0
    for c in cuts:
        nll, state = model.token_nll(X[:, i : i + c], Y[:, i : i + c], state)
        out.append(nll)
        i += c
    return torch.cat(out, dim=1)


def test_a_tokens_scores_do_not_change_when_later_tokens_change():
    model = make()
    x = torch.randint(0, V, (2, 30))
    changed = x.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % V
    logits, _ = model(x)
    logits2, _ = model(changed)
    assert torch.equal(logits[:, :20], logits2[:, :20])
    assert not torch.allclose(logits[:, 20:], logits2[:, 20:])


@pytest.mark.parametrize("cuts", [[1] * 40, [3, 5, 7, 25], [13, 27], [4] * 10])
def test_reading_a_text_in_pieces_scores_every_target_once_as_a_whole_read_does(cuts):
    """Longer than the context (8): the sliding window decides each token's context by its position,
    so however the text is cut, each of the 40 targets gets one score, the same one."""
    model = make()
    x = torch.randint(0, V, (2, 41))
    whole, state = model.token_nll(x[:, :-1], x[:, 1:])
    assert whole.shape == (2, 40) and int(state[1][0, 0]) == 40
    torch.testing.assert_close(pieces(model, x[:, :-1], x[:, 1:], cuts), whole, rtol=0, atol=1e-12)


def test_each_token_sees_the_window_the_stride_gives_it():
    """Context 8, stride 4: the token at position p is predicted from positions
    max(0, 4 * (p // 4 + 1) - 8) .. p; changing the token just before that window changes nothing."""
    model = make()
    assert model.stride == 4
    x = torch.randint(0, V, (1, 24))
    base, _ = model(x)
    for p in (9, 12, 15, 19):
        start = max(0, 4 * (p // 4 + 1) - 8)
        before, inside = x.clone(), x.clone()
        before[0, start - 1] = (before[0, start - 1] + 1) % V
        inside[0, start] = (inside[0, start] + 1) % V
        assert torch.equal(model(before)[0][0, p], base[0, p])
        assert not torch.allclose(model(inside)[0][0, p], base[0, p])


def test_evaluation_streams_score_every_token_and_more_context_helps_a_trained_model():
    """model_token_nll (the evaluate stage's scoring) returns one score per target whatever its
    chunk length; a model trained on a periodic text predicts it almost surely once it has seen a period."""
    torch.manual_seed(0)
    model = make(context=16).float().train()
    text = np.array(([1, 2, 3, 4, 5, 6, 7] * 40), dtype=np.int32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(150):
        i = np.random.randint(0, len(text) - 17, 8)
        X = torch.as_tensor(np.stack([text[j : j + 16] for j in i]))
        Y = torch.as_tensor(np.stack([text[j + 1 : j + 17] for j in i]))
        loss = model.token_nll(X, Y)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    nll = [model_token_nll(model, text, 1, steps) for steps in (5, 64)]
    assert len(nll[0]) == len(text) - 1
    np.testing.assert_allclose(nll[0], nll[1], atol=1e-5)
    assert nll[0][50:].mean() < 0.05


def test_training_mode_reads_the_minibatch_alone_and_dropout_draws_anew():
    model = make(dropout=0.3).train()
    x = torch.randint(0, V, (2, 8))
    state = (torch.randint(0, V, (1, 2, 7)), torch.full((1, 2), 50))
    a, new = model.token_nll(x, x, state)
    assert new[0].shape == (1, 2, 7) and int(new[1][0, 0]) == 58
    b, _ = model.token_nll(x, x, state)
    assert not torch.equal(a, b)  # dropout in training
    model.eval()
    torch.manual_seed(0)
    c, _ = model.token_nll(x, x)
    c2, _ = model.token_nll(x, x)
    assert torch.equal(c, c2)


def test_save_and_load_give_the_same_logits(tmp_path):
    vocab = Vocab.build(tokenize("abcdefghijkl", "char"), "char")
    model = make(context=6, vocab_size=len(vocab))
    x = torch.randint(0, len(vocab), (1, 20))
    save_model_file(tmp_path / "t.pt", model.float(), vocab, "transformer", 3, 10.0)
    loaded, ckpt = load_model(tmp_path / "t.pt", vocab.fingerprint)
    assert ckpt["model_config"]["cell"] == "transformer" and type(loaded) is type(model)
    torch.testing.assert_close(loaded.eval()(x)[0], model(x)[0], rtol=0, atol=0)


def test_the_adaptive_softmax_and_untied_output_work():
    for kw in (dict(softmax="adaptive", tie_weights=False, cutoffs=[4]), dict(tie_weights=False)):
        model = make(**kw)
        x = torch.randint(0, V, (2, 12))
        nll, _ = model.token_nll(x[:, :-1], x[:, 1:])
        logp = model(x[:, :-1])[0].log_softmax(-1)
        torch.testing.assert_close(-logp.gather(2, x[:, 1:, None])[..., 0], nll)


def test_sampling_with_the_carried_state_equals_rerunning_the_whole_text():
    vocab = Vocab.build(tokenize("the time traveller was expounding a matter", "char"), "char")
    model = make(context=8, vocab_size=len(vocab)).float()
    g = torch.Generator().manual_seed(0)
    out = gen.generate(model, vocab, "time", 30, "greedy", generator=g)
    seq = vocab.encode(tokenize("time", "char")).tolist()
    banned = gen.banned_ids(vocab)
    with torch.no_grad():
        for _ in range(30):
            last = model(torch.tensor([seq]))[0][0, -1].double()
            last[banned] = -float("inf")
            seq.append(int(last.argmax()))
    assert out == "time" + vocab.to_text(seq[4:])


def test_cache_and_dynamic_evaluation_run_on_a_transformer_left_to_right():
    model = make(context=8).float()
    text = np.random.default_rng(0).integers(0, V, 90).astype(np.int32)
    lp, grid = cache.log_probs(model, text, cache.GRID[:2])
    ms = dynamic.mean_squared_grads(model, text)
    dyn = dynamic.log_probs(model, text, ms, 1e-3, 0.0)
    longer = np.concatenate([text, [1, 2, 3]]).astype(np.int32)
    lp2, grid2 = cache.log_probs(model, longer, cache.GRID[:2])
    np.testing.assert_allclose(lp2[: len(lp)], lp, atol=1e-6)
    np.testing.assert_allclose(grid2[:, : len(lp)], grid, atol=1e-6)
    np.testing.assert_allclose(dynamic.log_probs(model, longer, ms, 1e-3, 0.0)[: len(dyn)], dyn, atol=1e-5)
    np.testing.assert_allclose(lp, -model_token_nll(model, text, 1, 64), atol=1e-5)


def test_a_context_longer_than_the_training_windows_is_refused():
    """Positions past num_steps would keep their initial values and be used in scoring."""
    params = {**committed_params(), "models": ["transformer"]}
    params["transformer"] = {**params["transformer"], "context": 128, "num_steps": 64}
    with pytest.raises(ParamError, match=r"transformer\.num_steps: 64 is shorter than transformer\.context \(128\)"):
        load_model_config("transformer", params=params)
    with pytest.raises(ParamError, match=r"transformer\.num_steps: 64 is shorter"):
        validate_all(params)
    params["transformer"]["num_steps"] = 128
    assert load_model_config("transformer", params=params)[1].num_steps == 128


def test_the_committed_transformer_section_and_its_checks():
    section = committed_params()["transformer"]
    cfg = validate_section("transformer", section, ("transformer",))
    assert isinstance(cfg, TransformerConfig) and cfg.impl == "torch"
    cases = [
        ({"heads": 3}, r"transformer\.heads: must divide transformer\.d_model"),
        ({"hidden": 64}, r"transformer\.hidden: unknown key"),
        ({"context": 1}, r"transformer\.context: must be >= 2"),
        ({"softmax": "adaptive"}, r"transformer\.tie_weights: cannot be combined with softmax: adaptive"),
        ({"cell": "transfomer"}, r"transformer\.cell: unknown value .transfomer..*did you mean"),
    ]
    for update, message in cases:
        with pytest.raises(ParamError, match=message):
            validate_section("transformer", {**section, "tie_weights": True, **update}, ("transformer",))


def _train(tmp_path, log=lambda *_: None, **train):
    """The Trainer on a short text: a 1-block Transformer, batch 4 x 10, validated every 20 steps."""
    text = "the time traveller for so it will be convenient to speak of him " * 40
    vocab = Vocab.build(list(text), "char")
    ids = vocab.encode(list(text))
    cfg = config("train", {"epochs": 2, "batch_size": 4, "num_steps": 10, "lr": 0.003, "device": "cpu", **train})
    model_cfg = config("transformer", {"d_model": 16, "layers": 1, "heads": 2, "context": 10, "dropout": 0.2})
    paths = TrainPaths.for_model("transformer", tmp_path)
    trainer = Trainer("transformer", model_cfg, cfg, vocab, ids[:2000], ids[2000:2300], paths, progress=False, log=log)
    return trainer.run()


def test_the_train_stage_trains_a_transformer_and_resumes_it_exactly(tmp_path):
    """Validation perplexity falls; a run interrupted between validation points (its state, the
    tokens read so far, saved in the resume file) ends with the uninterrupted run's weights."""
    full = _train(tmp_path / "a", eval_every=20, sampling="sequential")
    ppl = [r["val_perplexity"] for r in full["history"]]
    assert ppl[-1] < ppl[0] < 40

    def interrupt(msg):
        if "step 60 " in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", log=interrupt, eval_every=20, sampling="sequential")
    resume = load_checkpoint(TrainPaths.for_model("transformer", tmp_path / "b").resume)
    assert resume["position"]["step"] == 40 and resume["carried"][0].shape[:2] == (1, 4)
    resumed = _train(tmp_path / "b", eval_every=20, sampling="sequential")
    assert [r["val_perplexity"] for r in resumed["history"]] == ppl
    a = load_checkpoint(tmp_path / "a/models/transformer.last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b/models/transformer.last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
