"""`rnnlm score` reads a long text as a stream: the same token ids as the whole text, in pieces."""

from __future__ import annotations

import io
import itertools
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import config
from tqdm import tqdm

from rnnlm import score
from rnnlm.clean import decode_utf8
from rnnlm.errors import RnnlmError
from rnnlm.train import build_model
from rnnlm.vocab import Vocab, tokenize

HEADER = "The Project Gutenberg eBook\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***\r\n"
FOOTER = "\r\n*** END OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***\r\nlicence words\r\n"
BODY = (
    "\r\n \r\n  I\r\n\r\nThe Time Traveller (for so it will be convenient to speak of him) was expounding\r\n"
    "a recondite matter to us.   His grey eyes shone\tand twinkled, and his usually pale face\r"
    "was flushed and animated — «très» animé, 時間旅行者.\n" * 9 + "   a very long line " * 40 + "\n\n \n"
)
TEXTS = {
    "gutenberg": HEADER + BODY + FOOTER,
    "bom and no end marker": "\ufeff" + HEADER + BODY,
    "end marker only": BODY + FOOTER,
    "plain": BODY,
    "blank body": HEADER + "\n  \n" + FOOTER,
    # found in review: a BOM before a marker on line 1, or before blank lines; a long blank tail
    "bom and start on line 1": "\ufeff" + HEADER[HEADER.index("***") :] + BODY + FOOTER,
    "bom, blank lines, end marker only": "\ufeff\n \n\n" + BODY + FOOTER,
    "long blank tail": HEADER + "content line one\nlast words\n" + " \n" * 200 + "\t\n" * 50 + FOOTER,
    "lone cr line ends": BODY.replace("\r\n", "\r").replace("\n", "\r"),
}


def ids_whole(text: str, vocab, clean: dict, raw: bool):
    try:
        return score.text_ids(decode_utf8(text.encode(), "t"), vocab, clean, "t", raw).tolist()
    except RnnlmError as exc:
        return str(exc)


def ids_streamed(text: str, vocab, clean: dict, raw: bool, piece: int, monkeypatch):
    monkeypatch.setattr(score, "PIECE", piece)
    data = text.encode()
    try:
        chunks = list(score.streamed_ids(io.BytesIO(data), len(data), vocab, clean, "t", raw, tqdm(disable=True)))
        return np.concatenate(chunks).tolist() if chunks else []
    except RnnlmError as exc:
        return str(exc)


@pytest.mark.parametrize(
    "mode,level,eos,raw",
    [
        ("letters", "char", False, False),
        ("letters", "word", False, False),
        ("lines", "char", False, False),
        ("raw", "char", False, False),
        ("raw", "word", True, False),
        ("lines", "word", False, False),
        ("letters", "char", False, True),
    ],
)
@pytest.mark.parametrize("name", list(TEXTS))
def test_a_text_read_in_pieces_gives_the_ids_of_the_whole(monkeypatch, name, mode, level, eos, raw):
    """Pieces cut after line breaks, after spaces in a long line, and (char level) anywhere; the
    Gutenberg body found line by line; letters' joining space between pieces."""
    text = TEXTS[name]
    vocab = Vocab.build(tokenize(text, level, eos=eos), level, eos=eos)
    clean = {"mode": mode, "strip_gutenberg": True}
    whole = ids_whole(text, vocab, clean, raw)
    assert whole == ids_streamed(text, vocab, clean, raw, 2**20, monkeypatch)  # one piece
    for piece in (1000, 1500) if eos else (24, 64, 301):  # eos cuts only at line breaks
        assert ids_streamed(text, vocab, clean, raw, piece, monkeypatch) == whole, (piece, whole)
    if name == "blank body":
        assert "cleaning left no text" in whole or raw


def test_a_long_line_without_spaces_is_cut_between_characters_only_where_safe(monkeypatch):
    text = "時間旅行者\r\n" + "時間旅行者" * 40 + "\r\n" + "x\r" * 30
    vocab = Vocab.build(list(text), "char")
    for mode in ("lines", "raw"):
        whole = ids_whole(text, vocab, {"mode": mode}, False)
        assert all(ids_streamed(text, vocab, {"mode": mode}, False, n, monkeypatch) == whole for n in range(4, 40))
    words = Vocab.build(tokenize(text, "word"), "word")
    err = ids_streamed("abc" * 100, words, {"mode": "raw"}, False, 16, monkeypatch)
    assert "no line break or space in 16 bytes from byte offset 0" in err


def test_the_scorer_fed_in_pieces_gives_the_whole_texts_nll(monkeypatch):
    torch.manual_seed(0)
    vocab = Vocab.build(list("abcdefgh "), "char")
    model = build_model(config("lstm", {"hidden": 8, "embedding": 4, "layers": 1, "dropout": 0.0}), "lstm", len(vocab))
    ids = np.random.default_rng(0).integers(0, len(vocab), 1000)
    ids[5] = 0
    results = []
    for sizes in ([1000], [1, 299, 300, 400], [256, 1, 743]):
        pieces = [ids[a:b] for a, b in itertools.pairwise([0, *itertools.accumulate(sizes)])]
        results.append(score.score_ids(model, vocab, pieces, "cpu", "t"))
    nll, n, unk = results[0]
    assert n == 999 and unk == int((ids[1:] == 0).sum()) >= 1
    assert all(r[1:] == (n, unk) and r[0] == pytest.approx(nll, rel=1e-12) for r in results)


def test_memory_does_not_grow_with_the_text(monkeypatch, tmp_path):
    """Python-side allocations (tracemalloc sees numpy's) stay near a few pieces for a text 64 pieces long."""
    monkeypatch.setattr(score, "PIECE", 2**16)
    text = ("the time traveller for so it will be convenient to speak of him\n" * 65600)[: 2**22]
    vocab = Vocab.build(list(set(text)), "char")
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    tracemalloc.start()
    try:
        with score.opened(str(path), "long") as f:
            n = sum(
                len(ids)
                for ids in score.streamed_ids(
                    f, len(text), vocab, {"mode": "letters"}, "long", False, tqdm(disable=True)
                )
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n > 4_000_000 - 70_000 and peak < 40 * 2**16, peak  # the whole text's ids alone: 32 MiB


def test_an_invalid_byte_is_named_at_the_same_offset_and_line_as_in_the_whole_text(monkeypatch):
    data = (HEADER + BODY).encode() + b"\xff" + (BODY + FOOTER).encode()
    vocab = Vocab.build(list(BODY), "char")
    try:
        decode_utf8(data, "t")
    except RnnlmError as exc:
        whole = str(exc)
    monkeypatch.setattr(score, "PIECE", 64)
    with pytest.raises(RnnlmError) as streamed:
        list(
            score.streamed_ids(
                io.BytesIO(data),
                len(data),
                vocab,
                {"mode": "raw", "strip_gutenberg": True},
                "t",
                False,
                tqdm(disable=True),
            )
        )
    assert str(streamed.value) == whole and "(line 61)" in whole
