"""`rnnlm score`: the perplexity of a text under a model file, read as a stream.

A text of at most ``PIECE`` bytes is scored whole. A longer one is read in pieces, so memory does
not grow with it; cleaning is line-local, a Gutenberg body is found in a first pass and the hidden
state is carried across pieces, so the numbers are the whole text's. (One rule is for a text scored
whole only: it is kept as written when cleaning would change just its ends.)
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from . import clean
from .errors import RnnlmError

PIECE = 2**20  # bytes read, cleaned and tokenized at a time
MARKER_LINE = 2**16  # a Gutenberg marker is looked for in a line's first bytes (after at most this much indent)
SCORE_STEPS = 256  # tokens per forward call; never changes the result


@contextlib.contextmanager
def opened(name: str, label: str) -> Iterator[BinaryIO]:
    """``name`` (``-``: stdin) as a seekable binary file. A pipe or device is first copied to a
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
                    clean.decode_utf8(block, label, (copy.tell(), 0))  # names the NUL (or UTF-16) and stops
                copy.write(block)
            f = copy
        f.seek(0)
        yield f


def pieces(f: BinaryIO, body: tuple[int, int, int], label: str, eos: bool, anywhere: bool, cr: bool, bar: tqdm):
    """The text of ``body`` (start, end, line breaks before start) of ``f``, decoded in pieces. A piece
    ends after its last line break (with ``cr``, also a lone ``\\r``); else, unless ``eos`` (line ends
    are tokens), after its last space; else, when ``anywhere``, between its last two characters."""
    offset, end, lines = body
    rest = b""
    f.seek(offset)
    while offset < end:
        data = rest + f.read(min(PIECE, end - offset - len(rest)))
        i = len(data) if offset + len(data) >= end else data.rfind(b"\n") + 1  # the last piece: all that is left
        r = data.rfind(b"\r", 0, len(data) - 1) + 1 if cr else 0
        if r > i and data[r] != 0x0A:  # a \r that is not the first half of \r\n
            i = r
        if not i and not eos:
            i = data.rfind(b" ") + 1
        if not i and anywhere:  # at the last UTF-8 character boundary
            i = next((j for j in range(len(data) - 1, 0, -1) if data[j] & 0xC0 != 0x80), 0)
        if not i:
            where = "line break" if eos else "line break or space"
            raise RnnlmError(
                f"{label}: no {where} in {len(data):,} bytes from byte offset {offset}; "
                "rnnlm score reads a long text in pieces cut there"
            )
        data, rest = data[:i], data[i:]
        yield clean.decode_utf8(data, label, (offset, lines))  # errors name the offset and line in the file
        bar.update(len(data))
        offset, lines = offset + len(data), lines + data.count(b"\n")


def gutenberg_range(f: BinaryIO, size: int) -> tuple[int, int, int] | None:
    """The bytes of ``f`` that ``strip_gutenberg`` keeps, found line by line: (start, end, line
    breaks before start); None without markers. A UTF-8 byte-order mark is not text."""
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
            if start is None and (m := clean._GUTENBERG_START.match(text)):
                start, start_breaks = pos + len(text[: m.end()].encode()), breaks
                in_start_line = m.end() == len(text)
            elif clean._GUTENBERG_END.match(text):
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
    """[start, end) less its whitespace-only lines at either end (the last line keeps its break),
    and the line breaks before the new start (``breaks`` before the given one)."""
    decoder, head, pos = codecs.getincrementaldecoder("utf-8")("replace"), "", start
    f.seek(start)
    while not head.strip() and pos < end:
        block = f.read(min(PIECE, end - pos))
        head, pos = head + decoder.decode(block, pos + len(block) >= end), pos + len(block)
    if not head.strip():
        return start, start, breaks
    dropped = "".join(head[: len(head) - len(head.lstrip()) + 1].splitlines(keepends=True)[:-1])
    start, breaks = start + len(dropped.encode()), breaks + dropped.count("\n")
    data, tail, pos = b"", "", end
    while not tail.strip():
        f.seek(new := max(start, pos - PIECE))
        data, pos = f.read(pos - new) + data, new
        skip = next(i for i in range(len(data) + 1) if i == len(data) or data[i] & 0xC0 != 0x80)
        tail = data[skip:].decode("utf-8", "replace")
    dropped = "".join(tail[len(tail.rstrip()) - 1 :].splitlines(keepends=True)[1:])
    return start, end - len(dropped.encode()), breaks


def streamed_ids(f: BinaryIO, size: int, vocab, cleaning: dict, label: str, raw: bool, bar: tqdm):
    """Token ids of a long text, piece by piece, as :func:`text_ids` gives them for the whole."""
    mode = cleaning.get("mode", "raw")
    body = (gutenberg_range(f, size) if cleaning.get("strip_gutenberg") and not raw else None) or (0, size, 0)
    anywhere = vocab.level == "char" and (raw or mode != "letters")
    chars_in = chars_out = 0
    has_text = has_out = False
    joiner = ""
    for text in pieces(f, body, label, vocab.eos, anywhere, not raw, bar):
        out = text if raw else clean.clean_piece(text, mode)
        if mode == "letters" and not raw and out:
            out, joiner = joiner + out, " "  # letters joins its lines with one space
        chars_in, chars_out = chars_in + len(text), chars_out + len(out)
        has_text, has_out = has_text or bool(text.strip()), has_out or bool(out.strip())
        yield vocab.encode(vocab.tokenize(out))
    try:
        if not has_text and body[:2] == (0, size):
            raise RnnlmError(f"the input is whitespace only ({chars_in:,} characters)")
        if not raw:
            clean.check_kept(mode, chars_in if has_text else 0, chars_out)
            clean.check_left(has_out, mode, 0, bool(cleaning.get("strip_gutenberg")))
    except RnnlmError as exc:
        raise RnnlmError(f"{label}: {exc}") from None


def text_ids(text: str, vocab, cleaning: dict, label: str, raw: bool = False) -> np.ndarray:
    """Token ids of ``text`` after the model's cleaning (unless ``raw``) and tokenization."""
    try:
        cleaned = text if raw else clean.clean_like_corpus(text, cleaning)
    except RnnlmError as exc:
        raise RnnlmError(f"{label}: {exc}") from None
    if not cleaned.strip():
        raise RnnlmError(f"{label}: the input is empty" if not cleaned else f"{label}: the input is whitespace only")
    return vocab.encode(vocab.tokenize(cleaned))


def score_ids(model, vocab, parts: Iterable[np.ndarray], device, label: str, scorer=None) -> tuple[float, int, int]:
    """(total NLL in nats, tokens scored, of which ``<unk>``) of the ids in ``parts``, every token but the
    first given all before it, in :func:`rnnlm.metrics.model_token_nll`'s calls however the ids are split.
    ``scorer``: ids -> log-probs of ids[1:] (the cache or dynamic evaluation), given the whole text at once."""
    if scorer is not None:
        ids = np.concatenate([np.empty(0, dtype=np.int64), *parts])
        _check_scored(vocab, label, len(ids), bool((ids != vocab.unk).any()))
        return -float(scorer(ids).sum()), len(ids) - 1, int(np.count_nonzero(ids[1:] == vocab.unk))
    with torch.no_grad():
        return _score_model(model, vocab, parts, device, label)


def _score_model(model, vocab, parts: Iterable[np.ndarray], device, label: str) -> tuple[float, int, int]:
    model.eval()
    state, nll, n, unks, seen, known = None, 0.0, 0, 0, 0, False
    pending = np.empty(0, dtype=np.int64)
    for ids in itertools.chain(parts, [None]):  # None: the end, score what is left
        if ids is not None:
            seen, known = seen + len(ids), known or bool((ids != vocab.unk).any())
            pending = np.concatenate([pending, ids])
        while len(pending) > (1 if ids is None else SCORE_STEPS):
            chunk = pending[: SCORE_STEPS + 1]
            x = torch.from_numpy(chunk).to(device)
            chunk_nll, state = model.token_nll(x[None, :-1], x[None, 1:], state)
            nll, n = nll + float(chunk_nll.double().sum()), n + len(chunk) - 1
            unks += int(np.count_nonzero(chunk[1:] == vocab.unk))
            pending = pending[len(chunk) - 1 :]
    _check_scored(vocab, label, seen, known)
    return nll, n, unks


def _check_scored(vocab, label: str, seen: int, known: bool) -> None:
    if seen < 2:
        raise RnnlmError(f"{label}: {seen} token(s); scoring needs at least 2 (the first is context only)")
    if not known:
        raise RnnlmError(
            f"{label}: no token is in the model's vocabulary ({vocab.level} level, "
            f"{len(vocab)} types): is this text in the corpus's language and script?"
        )


def score_file(
    model, vocab, name: str, cleaning: dict, raw: bool, device, progress: bool, scorer=None
) -> tuple[float, int, int]:
    """:func:`score_ids` of the text in file ``name`` (``-``: stdin)."""
    label = "<stdin>" if name == "-" else name
    with opened(name, label) as f:
        clean.check_not_wide(f.read(4096), label)  # before a cut can split a UTF-16/32 code unit
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        with tqdm(total=size, desc=label, unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
            if size <= PIECE:
                ids = [text_ids(clean.decode_utf8(f.read(), label), vocab, cleaning, label, raw)]
            else:
                ids = streamed_ids(f, size, vocab, cleaning, label, raw, bar)
            return score_ids(model, vocab, ids, device, label, scorer)
