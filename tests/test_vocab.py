import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, config

from rnnlm.errors import ParamError, RnnlmError
from rnnlm.vocab import UNK, Vocab, build, detokenize, load_splits, read_clean, split_bounds, tokenize, write_outputs


def test_tokenize_levels():
    assert tokenize("ab c", "char") == ["a", "b", " ", "c"]
    assert tokenize("Hello, world! it's", "word") == ["Hello", ",", "world", "!", "it", "'", "s"]
    assert detokenize(["a", "b"], "char") == "ab" and detokenize(["a", "b"], "word") == "a b"


def test_unk_first_then_reserved_then_by_frequency_with_deterministic_ties():
    v = Vocab.build(list("bbaacccd"), "char", min_freq=1, reserved=["<pad>", "<eos>"])
    assert v.tokens == [UNK, "<pad>", "<eos>", "c", "a", "b", "d"]  # a/b tie broken by text
    assert v.counts[3:] == [3, 2, 2, 1]
    assert v.unk == 0 and v.index["c"] == 3


def test_min_freq_maps_rare_tokens_to_unk_and_counts_them():
    v = Vocab.build(list("aaabbc"), "char", min_freq=2)
    assert v.tokens == [UNK, "a", "b"]
    assert v.counts[0] == 1  # the one 'c'
    assert list(v.encode("abcz")) == [1, 2, 0, 0]


def test_encode_decode_round_trip():
    text = "the time traveller"
    v = Vocab.build(list(text), "char")
    ids = v.encode(list(text))
    # int32: 4 bytes a token in memory (issue 23, item 21); the model reads them as int64 indices
    assert ids.dtype == np.int32 and v.to_text(ids) == text


def test_empty_vocabulary_names_min_freq():
    with pytest.raises(ParamError, match=r"vocab\.min_freq: vocabulary is empty"):
        Vocab.build(list("abc"), "char", min_freq=5)


def test_json_round_trip_and_fingerprint():
    v = Vocab.build(list("hello world"), "char", reserved=["<eos>"])
    w = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert w.tokens == v.tokens and w.counts == v.counts and w.fingerprint == v.fingerprint
    assert Vocab.build(list("hello worlds"), "char").fingerprint != v.fingerprint


def test_build_is_deterministic():
    text = "abracadabra " * 20
    assert Vocab.build(list(text), "char").tokens == Vocab.build(list(text), "char").tokens


def test_split_is_contiguous_ordered_and_disjoint():
    tr, va, te = split_bounds(1000, [0.9, 0.05, 0.05])
    assert (tr.start, tr.stop, va.start, va.stop, te.start, te.stop) == (0, 900, 900, 950, 950, 1000)
    tr, va, te = split_bounds(1000, [0.5, 0.1, 0.2])  # a gap between train and val; test is the end
    assert tr.stop == 500 and (va.start, va.stop) == (700, 800) and (te.start, te.stop) == (800, 1000)


def test_empty_split_names_the_param():
    with pytest.raises(ParamError, match=r"vocab\.split: the val split is empty"):
        split_bounds(10, [0.9, 0.01, 0.09])


def test_vocabulary_comes_from_train_split_only(tmp_path):
    text = "a" * 90 + "b" * 5 + "z" * 5  # 'z' only in the test split, 'b' only in val
    cfg = config("vocab", {"level": "char"})
    vocab, encoded, stats, _ = build(text, cfg)
    assert vocab.tokens == [UNK, "a"]
    assert stats["oov_rate"] == {"val": 1.0, "test": 1.0}
    assert stats["tokens"] == {"train": 90, "val": 5, "test": 5}
    assert set(encoded["test"]) == {0}
    write_outputs(vocab, encoded, stats, tmp_path)
    splits = load_splits(tmp_path / "data" / "tokens")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [90, 5, 5]
    assert (tmp_path / "metrics/vocab/zipf.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "metrics/vocab/token_freq.csv").read_text().splitlines()
    assert table[0] == "id,token,count,frequency" and table[2].startswith("1,a,90,")


# --- word level the word_language_model way, pre-split corpora ---------------------------------
PTB = str(SHARED_DATA / "ptb.{}.txt")


def test_whitespace_tokenizer_keeps_tokens_whole_and_eos_ends_every_line():
    text = " the <unk> said n't \n it 's N \n"
    assert tokenize(text, "word", "regex")[:4] == ["the", "<", "unk", ">"]
    words = tokenize(text, "word", "whitespace", eos=True)
    assert words == ["the", "<unk>", "said", "n't", "<eos>", "it", "'s", "N", "<eos>"]
    assert tokenize("a\nb", "word", "whitespace", eos=True) == ["a", "<eos>", "b", "<eos>"]  # last line unterminated
    assert detokenize(words, "word") == "the <unk> said n't\nit 's N\n"


def test_literal_unk_in_the_text_is_the_unknown_token():
    vocab = Vocab.build(["a", "<unk>", "b", "a"], "word")
    assert vocab.tokens.count("<unk>") == 1 and vocab.encode(["<unk>", "zzz", "a"]).tolist() == [0, 0, vocab.index["a"]]
    assert vocab.counts[0] == 1


def test_penn_treebank_counts_match_the_published_convention():
    """pytorch/examples word_language_model and Zaremba et al. 2014: 10,000 types,
    929,589 / 73,760 / 82,430 tokens, no out-of-vocabulary word in val or test."""
    texts = {s: Path(PTB.format(f)).read_text() for s, f in (("train", "train"), ("val", "valid"), ("test", "test"))}
    cfg = config("vocab", {"level": "word", "tokenizer": "whitespace", "eos": True})
    vocab, encoded, stats, _ = build(texts, cfg)
    assert len(vocab) == 10_000 and "<eos>" in vocab.index and vocab.tokens[0] == "<unk>"
    assert stats["tokens"] == {"train": 929_589, "val": 73_760, "test": 82_430}
    assert {len(a) for a in encoded.values()} == {929_589, 73_760, 82_430}
    assert stats["oov_rate"] == {"val": 0.0, "test": 0.0} and 0.04 < stats["unk_rate"]["test"] < 0.07
    assert stats["presplit"] is True


def test_presplit_corpus_is_read_from_the_clean_directory(tmp_path):
    for name, text in (("train", "a b a c\n"), ("val", "a b\n"), ("test", "c d\n")):
        (tmp_path / f"{name}.txt").write_text(text)
    texts = read_clean(tmp_path)
    cfg = config("vocab", {"level": "word", "tokenizer": "whitespace", "eos": True})
    vocab, encoded, stats, _ = build(texts, cfg)
    assert stats["tokens"] == {"train": 5, "val": 3, "test": 3} and "d" not in vocab.index  # train only
    assert stats["oov_rate"]["test"] == pytest.approx(1 / 3)
    (tmp_path / "val.txt").write_text("\n  \n")
    with pytest.raises(
        RnnlmError,
        match=r"the val split has 0 token\(s\) after cleaning \(data/clean/val.txt\) .*"
        r"download.corpus.val",
    ):
        build(read_clean(tmp_path), config("vocab", {"level": "word", "tokenizer": "whitespace"}))


def test_split_sizes_are_checked_at_the_vocab_stage_naming_the_file(tmp_path):
    """A val split of one token would fail only at training, blamed on vocab.split (which a
    pre-split corpus does not use): the vocab stage names the split's own file instead."""
    for name, text in (("train", "abcabcabc"), ("val", "x"), ("test", "abc")):
        (tmp_path / f"{name}.txt").write_text(text)
    source = {"corpus": {"train": "data/corpora/t.txt", "val": {"source": "data/corpora/v.txt"}, "test": "te.txt"}}
    with pytest.raises(
        RnnlmError,
        match=r"^the val split has 1 token\(s\) after cleaning \(data/clean/val\.txt\) "
        r"and needs at least 2: check download\.corpus\.val \(data/corpora/v\.txt\) "
        r"and clean\.mode$",
    ):
        build(read_clean(tmp_path), config("vocab", {"level": "char"}), source)
    with pytest.raises(
        ParamError,
        match=r"vocab\.split: the test split gets 1 of the corpus's 30 tokens, and needs at "
        r"least 2",
    ):
        build("abcdefghij" * 3, config("vocab", {"level": "char", "split": [0.9, 0.06, 0.04]}))


@pytest.mark.parametrize("mode", ["letters", "lines"])
def test_eos_needs_line_ends_to_mark(mode):
    """letters and lines join all lines: vocab.eos would do nothing, silently; it is refused."""
    cfg = config("vocab", {"level": "word", "eos": True})
    with pytest.raises(
        ParamError,
        match=rf"^params\.yaml: vocab\.eos: true, but the cleaned text has no line ends "
        rf"to mark \(clean\.mode {mode} joins all lines into one; raw keeps them\)",
    ):
        build("the time traveller " * 20, cfg, {"clean": {"mode": mode}})
    vocab, *_ = build("the time\ntraveller\n" * 20, cfg, {"clean": {"mode": "raw"}})
    assert "<eos>" in vocab.index


@pytest.mark.parametrize("key,value", [("tokenizer", "whitespace"), ("eos", True)])
def test_word_level_options_at_char_level_name_the_param(key, value):
    with pytest.raises(ParamError, match=rf"vocab\.{key}: .*vocab.level: word"):
        config("vocab", {"level": "char", key: value})
