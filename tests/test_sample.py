"""Tests for rnnlm.sample: strategies, determinism, state carrying, prefixes, masking, outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import config, save_model_file, tiny_model

from rnnlm import sample as gen
from rnnlm.errors import ParamError, RnnlmError
from rnnlm.fileio import write_json
from rnnlm.models import RNNLM, LanguageModel
from rnnlm.vocab import UNK, Vocab, tokenize

TEXT = "the time traveller for so it will be convenient to speak of him was expounding a recondite matter to us "


def char_vocab(reserved=()) -> Vocab:
    return Vocab.build(tokenize(TEXT, "char"), "char", reserved=reserved)


def word_vocab() -> Vocab:
    return Vocab.build(tokenize(TEXT, "word"), "word")


def make_model(vocab, cell="gru", seed=0) -> LanguageModel:
    torch.manual_seed(seed)
    if cell == "transformer":
        return tiny_model(cell, len(vocab), width=16, dropout=0.3).eval()
    return RNNLM(cell, "torch", len(vocab), hidden=16, layers=2, dropout=0.3, embedding=8).eval()


def reference_greedy(model, vocab, prefix, length):
    """Greedy decoding that re-runs the whole sequence from a zero state for every token."""
    seq = vocab.encode(tokenize(prefix, vocab.level)).tolist()
    n = len(seq)
    banned = gen.banned_ids(vocab)
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(torch.tensor([seq]))
            last = logits[0, -1].double()
            last[banned] = -float("inf")
            seq.append(int(torch.argmax(last)))
    return prefix + vocab.to_text(seq[n:])


def run(model, vocab, prefix, length=30, strategy="greedy", seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return gen.generate(model, vocab, prefix, length, strategy, generator=g, **kw)


# --- correctness -----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_greedy_with_carried_state_equals_rerunning_the_whole_sequence(cell):
    vocab = char_vocab()
    model = make_model(vocab, cell)
    out = run(model, vocab, "time trav", 40)
    assert out == reference_greedy(model, vocab, "time trav", 40)
    assert out.startswith("time trav") and len(out) == len("time trav") + 40


def test_top_k_1_equals_greedy_at_any_temperature():
    vocab = char_vocab()
    model = make_model(vocab)
    greedy = run(model, vocab, "the ", 40)
    for t in (0.5, 1.0, 3.0):
        assert run(model, vocab, "the ", 40, "top_k", seed=7, top_k=1, temperature=t) == greedy


@pytest.mark.parametrize("strategy", ["greedy", "temperature", "top_k"])
def test_temperature_zero_is_greedy_with_every_strategy(strategy):
    """Issue 14 item 9: `strategy: greedy` with `temperature: 0` was rejected."""
    vocab = char_vocab()
    model = make_model(vocab)
    assert run(model, vocab, "the ", 40, strategy, seed=5, temperature=0.0) == run(model, vocab, "the ", 40)
    assert config("sample", {"strategy": "greedy", "temperature": 0}).temperature == 0.0
    with pytest.raises(ParamError, match="sample.temperature"):
        config("sample", {"temperature": -0.5})


@pytest.mark.parametrize("strategy", ["temperature", "top_k"])
def test_a_subnormal_temperature_samples_the_argmax_without_nan(strategy):
    """Issue 14 item 10: temperature 1e-320 made logits / T overflow to inf and the softmax nan."""
    vocab = char_vocab()
    model = make_model(vocab)
    assert run(model, vocab, "the ", 40, strategy, seed=5, temperature=1e-320) == run(model, vocab, "the ", 40)
    logits = torch.tensor([3.0, -2.0, 3.0 - 1e-9, -float("inf")], dtype=torch.float64)
    picks = {gen.choose(logits, strategy, 1e-320, 4, torch.Generator().manual_seed(i)) for i in range(20)}
    assert picks == {0}


def test_generate_does_not_change_the_models_mode():
    vocab = char_vocab()
    model = make_model(vocab).train()
    run(model, vocab, "the ", 5, "temperature")
    assert model.training


# --- determinism -----------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["temperature", "top_k"])
def test_same_seed_same_text_different_seed_different_text(strategy):
    vocab = char_vocab()
    model = make_model(vocab)
    a = run(model, vocab, "the ", 60, strategy, seed=1, temperature=1.5, top_k=10)
    b = run(model, vocab, "the ", 60, strategy, seed=1, temperature=1.5, top_k=10)
    c = run(model, vocab, "the ", 60, strategy, seed=2, temperature=1.5, top_k=10)
    assert a == b
    assert a != c  # an untrained model spreads its probability: 60 draws practically never agree


def test_sample_seed_is_stable_and_distinguishes_model_and_prefix():
    s = gen.sample_seed(0, "lstm", "time traveller")
    assert s == gen.sample_seed(0, "lstm", "time traveller") and 0 <= s < 2**63
    assert (
        len(
            {
                s,
                gen.sample_seed(1, "lstm", "time traveller"),
                gen.sample_seed(0, "gru", "time traveller"),
                gen.sample_seed(0, "lstm", "time"),
            }
        )
        == 4
    )


# --- prefixes ---------------------------------------------------------------------------------
def test_out_of_vocabulary_prefix_warns_once_and_maps_to_unk():
    vocab = char_vocab()
    model = make_model(vocab)
    warnings = []
    out = run(model, vocab, "Zebra! qq", 20, warn=warnings.append)
    assert out.startswith("Zebra! qq") and len(out) == len("Zebra! qq") + 20
    assert len(warnings) == 1
    for tok in ("'Z'", "'!'", "'q'"):
        assert tok in warnings[0]
    assert warnings[0].count("'q'") == 1  # each unknown token named once
    assert gen.encode_prefix(vocab, "Zeb", warn=None) == [vocab.unk, vocab.index["e"], vocab.index["b"]]
    # equivalent to the same prefix with <unk> in place of the unknown characters
    ids = gen.encode_prefix(vocab, "Zebra! qq", warn=None)
    assert ids.count(vocab.unk) == 4


def test_out_of_vocabulary_warning_goes_to_stderr(capsys):
    vocab = char_vocab()
    run(make_model(vocab), vocab, "Q", 3)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Q'" in err and UNK in err


def test_in_vocabulary_prefix_gives_no_warning():
    vocab = char_vocab()
    warnings = []
    run(make_model(vocab), vocab, "time", 5, warn=warnings.append)
    assert warnings == []


def test_empty_prefix_starts_from_the_most_frequent_token_when_greedy():
    vocab = char_vocab()
    model = make_model(vocab)
    out = run(model, vocab, "", 25)
    assert len(out) == 25
    assert out[0] == vocab.tokens[1] == " "  # the most frequent train token
    assert out == reference_greedy(model, vocab, out[0], 24)  # the rest continues from it
    sampled = run(model, vocab, "", 25, "temperature", seed=3)
    assert len(sampled) == 25 and UNK not in sampled


def test_empty_prefix_primes_on_bos_when_the_data_has_it():
    vocab = Vocab(["<unk>", "<bos>", "a", "b"], [0, 3, 5, 4], "char", ["<bos>"])
    model = make_model(vocab)
    out = run(model, vocab, "", 10)
    assert len(out) == 10 and "<bos>" not in out
    with torch.no_grad():
        first = model(torch.tensor([[1]]))[0][0, -1].double()
    first[[0, 1]] = -float("inf")
    assert out[0] == vocab.tokens[int(torch.argmax(first))]


def test_word_level_prefix_and_continuation_are_joined_by_a_space():
    vocab = word_vocab()
    model = make_model(vocab)
    out = run(model, vocab, "the time", 6)
    assert out.startswith("the time ") and len(out.split()) == 2 + 6


def test_length_zero_returns_the_prefix():
    vocab = char_vocab()
    assert run(make_model(vocab), vocab, "the", 0) == "the"


# --- masking ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "temperature", "top_k"])
def test_unk_and_reserved_tokens_are_never_generated(strategy):
    vocab = char_vocab(reserved=["<pad>", "<eos>"])
    model = make_model(vocab)
    special = [vocab.index[t] for t in (UNK, "<pad>", "<eos>")]
    with torch.no_grad():  # make the specials by far the most likely tokens
        model.decoder.bias[special] = 50.0
    g = torch.Generator().manual_seed(0)
    text = gen.generate(model, vocab, "the ", 200, strategy, temperature=2.0, top_k=3, generator=g, warn=None)
    for t in (UNK, "<pad>", "<eos>"):
        assert t not in text
    assert gen.banned_ids(vocab) == sorted(special)


def test_when_only_specials_exist_they_may_be_generated():
    vocab = Vocab(["<unk>"], [5], "char")
    assert gen.banned_ids(vocab) == []
    assert gen.choose(torch.zeros(1), "top_k", generator=torch.Generator().manual_seed(0)) == 0


# --- the stage's work ----------------------------------------------------------------------------
def test_default_prefixes_per_corpus():
    assert gen.default_prefixes("timemachine") == ["time traveller"]
    assert gen.default_prefixes("jaychou") == ["分开", "不分开"]
    assert gen.default_prefixes("tinyshakespeare") == ["ROMEO:"]
    assert gen.default_prefixes("https://example.org/corpus.txt") == [""]


def _project(root: Path, vocab: Vocab, models=("rnn", "lstm", "gru", "transformer")):
    write_json(root / "data" / "vocab.json", vocab.to_dict())
    for i, m in enumerate(models):
        model = make_model(vocab, m, seed=i)
        save_model_file(root / "models" / f"{m}.pt", model, vocab, m, 2, 9.0)


CFG = config(
    "sample",
    {"prefixes": [], "length": 30, "strategy": "top_k", "temperature": 0.8, "top_k": 5, "seed": 0, "device": "cpu"},
)


def test_run_sample_writes_files_and_is_reproducible(tmp_path):
    _project(tmp_path, char_vocab())
    warnings = []
    first = gen.run_sample(CFG, "timemachine", tmp_path, warn=warnings.append)
    files = {p.name: p.read_bytes() for p in (tmp_path / "samples").iterdir()}
    assert sorted(files) == ["gru.txt", "lstm.txt", "rnn.txt", "samples.md", "transformer.txt"]
    md = files["samples.md"].decode()
    for m in ("rnn", "lstm", "gru", "transformer"):
        assert f"## {m}" in md
        text = first[m][0][1]
        assert text.startswith("time traveller") and text in md and text in files[f"{m}.txt"].decode()
    assert md.count("time traveller") >= 8 and warnings == []

    # same seed: the same bytes; and a model's sample does not depend on which others are sampled
    gen.run_sample(CFG, "timemachine", tmp_path)
    assert {p.name: p.read_bytes() for p in (tmp_path / "samples").iterdir()} == files
    only = gen.run_sample(CFG, "timemachine", tmp_path, models=("gru",))
    assert only["gru"] == first["gru"]


def test_run_sample_prefixes_warn_once_each_not_once_per_model(tmp_path):
    _project(tmp_path, char_vocab())
    warnings = []
    cfg = dataclasses.replace(CFG, prefixes=["Zz top", "", "the"], length=10)
    out = gen.run_sample(cfg, "timemachine", tmp_path, warn=warnings.append)
    assert len(warnings) == 1 and "'Z'" in warnings[0]
    assert [p for p, _ in out["rnn"]] == ["Zz top", "", "the"]
    assert len(out["rnn"][1][1]) == 10  # empty prefix: just the generated tokens
    md = (tmp_path / "samples" / "samples.md").read_text()
    assert '### prefix "" (empty)' in md and '### prefix "Zz top"' in md


def test_run_sample_missing_checkpoint_names_file_and_stage(tmp_path):
    _project(tmp_path, char_vocab(), models=("rnn", "gru"))
    with pytest.raises(RnnlmError, match=r"models/lstm\.pt.*train@lstm"):
        gen.run_sample(CFG, "timemachine", tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_sample_device(tmp_path):
    _project(tmp_path, char_vocab())
    with pytest.raises(ParamError, match="sample.device"):
        gen.run_sample(dataclasses.replace(CFG, device="cuda"), "timemachine", tmp_path)
