"""`rnnlm score`: the perplexity of a text under a model file, read as a stream.

A text of at most ``PIECE`` bytes is cleaned the way the model's corpus was
(:func:`rnnlm.clean.clean_like_corpus`), tokenized and scored whole. A longer one is read in pieces
of about ``PIECE`` bytes, each cut after its last line break (in a longer line: after its last
space; for a char-level model that keeps every character: between any two characters, never
inside ``\\r\\n``). Cleaning is line-local (:func:`rnnlm.clean.clean_piece`), a Project Gutenberg
body is found in a first pass over the file, and the hidden state is carried from piece to piece
in the same ``SCORE_STEPS``-token calls as a whole text: the numbers are those of the whole text,
in memory that does not grow with it. One rule is for short texts only: a text that cleaning
would change only at its ends is kept as written when it fits one piece.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from .clean import (
    _GUTENBERG_END,
    _GUTENBERG_START,
    check_kept,
    check_left,
    check_not_wide,
    clean_like_corpus,
    clean_piece,
    decode_utf8,
)
from .errors import RnnlmError

PIECE = 2**20  # bytes read, cleaned and tokenized at a time
MARKER_LINE = 2**16  # a Gutenberg marker is looked for in a line's first bytes (after at most this much indent)
SCORE_STEPS = 256  # tokens per forward call; never changes the result


@contextlib.contextmanager
def opened(name: str, label: str) -> Iterator[BinaryIO]:
    """``name`` as a seekable binary file; stdin (``-``), a pipe or a device is first copied to a
    temporary file, stopping at the first NUL byte (``/dev/zero`` never ends)."""
    try:
        f = sys.stdin.buffer if name == "-" else open(name, "rb")
        regular = name != "-" and stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except FileNotFoundError:
        raise RnnlmError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise RnnlmError(f"{label}: a directory, not a text file") from None
    except OSError as exc:
        raise RnnlmError(f"{label}: cannot read: {exc.strerror or exc}") from None
    with contextlib.ExitStack() as stack:
        if name != "-":
            stack.enter_context(f)
        if not regular:
            copy = stack.enter_context(tempfile.TemporaryFile())
            while block := f.read(PIECE):
                if b"\x00" in block:
                    decode_utf8(block, label, (copy.tell(), 0))  # names the NUL (or UTF-16) and stops
                copy.write(block)
            f = copy
        f.seek(0)
        yield f


def cut(data: bytes, eos: bool, anywhere: bool, cr: bool = False) -> int:
    """Where to end a piece of ``data``: after its last line break (with ``cr``, cleaning reads a
    lone ``\r`` as one too); else (unless ``eos``, whose line ends are tokens) after its last
    space; else, when ``anywhere``, at the last character boundary before its last byte (a
    ``\r\n`` inside ``data`` has a line break to cut after instead). 0 when there is none."""
    i = data.rfind(b"\n") + 1
    r = data.rfind(b"\r", 0, len(data) - 1) + 1 if cr else 0
    if r > i and data[r] != 0x0A:  # a \r that is not the first half of \r\n
        i = r
    if not i and not eos:
        i = data.rfind(b" ") + 1
    if not i and anywhere:
        i = next((j for j in range(len(data) - 1, 0, -1) if data[j] & 0xC0 != 0x80), 0)  # not inside a UTF-8 character
    return i


def pieces(
    f: BinaryIO, body: tuple[int, int, int], label: str, cuts: tuple[bool, bool, bool], bar: tqdm
) -> Iterator[str]:
    """The text of bytes [start, end) of ``f`` (``body``: start, end and the line breaks before
    start), decoded in pieces cut where :func:`cut` says (``cuts``: its eos, anywhere, cr); errors
    name the offset and line in the file."""
    offset, end, lines = body
    eos, rest = cuts[0], b""
    f.seek(offset)
    while offset < end:
        data = rest + f.read(min(PIECE, end - offset - len(rest)))
        i = len(data) if offset + len(data) >= end else cut(data, *cuts)
        if not i:
            where = "line break" if eos else "line break or space"
            raise RnnlmError(
                f"{label}: no {where} in {len(data):,} bytes from byte offset {offset}; "
                "rnnlm score reads a long text in pieces cut there"
            )
        data, rest = data[:i], data[i:]
        yield decode_utf8(data, label, (offset, lines))
        bar.update(len(data))
        offset, lines = offset + len(data), lines + data.count(b"\n")


def gutenberg_range(f: BinaryIO, size: int) -> tuple[int, int, int] | None:
    """The bytes of ``f`` that :func:`rnnlm.clean.strip_gutenberg` keeps, found line by line:
    (start, end, line breaks before start); None without markers. A UTF-8 byte-order mark is not
    text (decode_utf8 drops it)."""
    f.seek(0)
    bom = 3 if f.read(3) == b"\xef\xbb\xbf" else 0
    start = end = first_end = None
    pos, line_start, in_start_line, breaks, start_breaks = bom, True, False, 0, 0
    f.seek(bom)
    for line in iter(lambda: f.readline(MARKER_LINE), b""):
        if in_start_line:  # the START line goes on past a read: the body starts at its line break
            k = min((i for i in (line.find(b"\r"), line.find(b"\n")) if i >= 0), default=len(line))
            start, in_start_line = pos + k, k == len(line)
        elif line_start and end is None:
            text = line.decode("utf-8", "replace")
            if start is None and (m := _GUTENBERG_START.match(text)):
                start, start_breaks = pos + len(text[: m.end()].encode()), breaks
                in_start_line = m.end() == len(text)
            elif _GUTENBERG_END.match(text):
                if start is not None:
                    end = pos
                elif first_end is None:
                    first_end = pos
        line_start, pos = line.endswith(b"\n"), pos + len(line)
        breaks += line_start
    if start is None and first_end is None:
        return None
    start, end = (bom, first_end) if start is None else (start, size if end is None else end)
    return _without_blank_lines(f, start, end, start_breaks)


def _without_blank_lines(f: BinaryIO, start: int, end: int, breaks: int) -> tuple[int, int, int]:
    """[start, end) less its whitespace-only lines at either end (the last kept line keeps its
    break), with the count of line breaks before start (``breaks`` before the given one)."""
    decoder, head, pos = codecs.getincrementaldecoder("utf-8")("replace"), "", start
    f.seek(start)
    while not head.strip() and pos < end:
        block = f.read(min(PIECE, end - pos))
        head, pos = head + decoder.decode(block, pos + len(block) >= end), pos + len(block)
    if not head.strip():
        return start, start, breaks
    head = head[: len(head) - len(head.lstrip()) + 1]
    lines = head.splitlines(keepends=True)
    while lines and not lines[0].strip():
        dropped = lines.pop(0)
        start, breaks = start + len(dropped.encode()), breaks + dropped.count("\n")
    data, tail, pos = b"", "", end
    while not tail.strip():
        f.seek(new := max(start, pos - PIECE))
        data, pos = f.read(pos - new) + data, new
        skip = next(i for i in range(len(data) + 1) if i == len(data) or data[i] & 0xC0 != 0x80)
        tail = data[skip:].decode("utf-8", "replace")
    lines = tail[len(tail.rstrip()) - 1 :].splitlines(keepends=True)
    while lines and not lines[-1].strip():
        end -= len(lines.pop().encode())
    return start, end, breaks


def streamed_ids(f: BinaryIO, size: int, vocab, clean: dict, label: str, raw: bool, bar: tqdm) -> Iterator[np.ndarray]:
    """Token ids of a long text, piece by piece, as :func:`text_ids` gives them for the whole."""
    mode = clean.get("mode", "raw")
    body = (gutenberg_range(f, size) if clean.get("strip_gutenberg") and not raw else None) or (0, size, 0)
    anywhere = vocab.level == "char" and (raw or mode != "letters")
    chars_in = chars_out = 0
    has_text = has_out = False
    joiner = ""
    for text in pieces(f, body, label, (vocab.eos, anywhere, not raw), bar):
        out = text if raw else clean_piece(text, mode)
        if mode == "letters" and not raw and out:
            out, joiner = joiner + out, " "  # letters joins its lines with one space
        chars_in, chars_out = chars_in + len(text), chars_out + len(out)
        has_text, has_out = has_text or bool(text.strip()), has_out or bool(out.strip())
        yield vocab.encode(vocab.tokenize(out))
    try:
        if not has_text and body[:2] == (0, size):
            raise RnnlmError(f"the input is whitespace only ({chars_in:,} characters)")
        if not raw:
            check_kept(mode, chars_in if has_text else 0, chars_out)
            check_left(has_out, mode, 0, bool(clean.get("strip_gutenberg")))
    except RnnlmError as exc:
        raise RnnlmError(f"{label}: {exc}") from None


def text_ids(text: str, vocab, clean: dict, label: str, raw: bool = False) -> np.ndarray:
    """Token ids of ``text`` after the model's cleaning (unless ``raw``) and tokenization."""
    try:
        cleaned = text if raw else clean_like_corpus(text, clean)
    except RnnlmError as exc:
        raise RnnlmError(f"{label}: {exc}") from None
    if not cleaned.strip():
        raise RnnlmError(f"{label}: the input is empty" if not cleaned else f"{label}: the input is whitespace only")
    return vocab.encode(vocab.tokenize(cleaned))


class Scorer:
    """The NLL of each token given every token before it, fed in pieces: the forward calls of
    :func:`rnnlm.metrics.model_token_nll` with one stream, ``SCORE_STEPS`` targets each."""

    def __init__(self, model, unk: int, device):
        self.model, self.unk, self.device = model.eval(), unk, device
        self.pending = np.empty(0, dtype=np.int64)
        self.state, self.nll, self.n, self.unks, self.known, self.seen = None, 0.0, 0, 0, False, 0

    @torch.no_grad()
    def feed(self, ids: np.ndarray, last: bool = False) -> None:
        self.known = self.known or bool((ids != self.unk).any())
        self.unks += int(np.count_nonzero((ids[1:] if self.seen == 0 else ids) == self.unk))  # the first is context
        self.seen += len(ids)
        self.pending = np.concatenate([self.pending, ids])
        while len(self.pending) > (1 if last else SCORE_STEPS):
            chunk = torch.from_numpy(self.pending[: SCORE_STEPS + 1]).to(self.device)
            nll, self.state = self.model.token_nll(chunk[None, :-1], chunk[None, 1:], self.state)
            self.nll += float(nll.double().sum())
            self.n += len(chunk) - 1
            self.pending = self.pending[len(chunk) - 1 :]

    def result(self, label: str, vocab) -> tuple[float, int, int]:
        """(total NLL in nats, tokens scored, of which ``<unk>``)."""
        if self.seen < 2:
            raise RnnlmError(f"{label}: {self.seen} token(s); scoring needs at least 2 (the first is context only)")
        if not self.known:
            raise RnnlmError(
                f"{label}: no token is in the model's vocabulary ({vocab.level} level, "
                f"{len(vocab)} types): is this text in the corpus's language and script?"
            )
        return self.nll, self.n, self.unks


def score_file(model, vocab, name: str, clean: dict, raw: bool, device, progress: bool) -> tuple[float, int, int]:
    """(total NLL in nats, tokens scored, of which ``<unk>``) of the text in file ``name`` (``-``:
    stdin), every token but the first given all before it: the evaluate stage's exact scoring."""
    label = "<stdin>" if name == "-" else name
    scorer = Scorer(model, vocab.unk, device)
    with opened(name, label) as f:
        check_not_wide(f.read(4096), label)  # before a cut can split a UTF-16/32 code unit
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        with tqdm(total=size, desc=label, unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
            if size <= PIECE:
                scorer.feed(text_ids(decode_utf8(f.read(), label), vocab, clean, label, raw), last=True)
            else:
                for ids in streamed_ids(f, size, vocab, clean, label, raw, bar):
                    scorer.feed(ids)
                scorer.feed(np.empty(0, dtype=np.int64), last=True)
    return scorer.result(label, vocab)
