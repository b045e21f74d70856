"""Clean the raw corpus into the text the vocabulary stage reads (the ``clean`` stage).

Modes (``clean.mode``):

``letters``
    The d2l rule, line by line: ``re.sub('[^A-Za-z]+', ' ', line).strip().lower()``; empty lines
    are dropped. Unlike d2l (which keeps a list of lines), the cleaned lines are joined with a
    single space ``' '``, not ``'\\n'``: the output is one line of ``a-z`` and single spaces, so
    the d2l time machine gives exactly 27 distinct characters (26 letters and space), the
    vocabulary the book reports, even though the vocabulary stage treats newline as a character.
``lines``
    Every character is kept; each line break (``\\r\\n``, ``\\r`` or ``\\n``) becomes one space, as
    the Jay Chou lyrics examples do.
``raw``
    Every character is kept; line endings are normalised to ``\\n``.

``clean.max_chars`` (0 = all) then keeps the first N characters of the cleaned text.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import fileio
from .errors import RnnlmError
from .params import SPLIT_NAMES, CleanConfig

MODES = ("letters", "lines", "raw")
MIN_KEPT = 0.10  # mode letters refuses a text it would shrink below this share (another script)

_NEWLINE = re.compile(r"\r\n|\r|\n")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
# Marker lines such as "*** START OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***"
# (also "THIS", "EBOOK"/"E-BOOK", any case, with or without spaces after the asterisks).
_GUTENBERG_START, _GUTENBERG_END = (
    re.compile(
        rf"^[ \t]*\*{{3}}[ \t]*{word} OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b[^\r\n]*", re.IGNORECASE | re.MULTILINE
    )
    for word in ("START", "END")
)


BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)


def wide_encoding(data: bytes) -> str | None:
    """The UTF-16/32 encoding ``data`` is in, by its byte-order mark, or for UTF-16 without one,
    by its NUL bytes (most of the odd or the even bytes of a Latin-script text); None otherwise."""
    head = data[:4096]
    for bom, name in BOMS:
        if data.startswith(bom):
            unit = 4 if name.startswith("UTF-32") else 2  # a real one has whole code units and decodes
            return name if len(data) % unit == 0 and _decodes(head[: len(head) // 4 * 4], name) else None
    if len(head) >= 4 and b"\x00" in head:
        for name, zeros, chars in (("UTF-16LE", head[1::2], head[0::2]), ("UTF-16BE", head[0::2], head[1::2])):
            if zeros.count(0) > 0.9 * len(zeros) and chars.count(0) < 0.5 * len(chars):  # not all NULs
                return f"{name} (no byte-order mark)"
    return None


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return len(data) > 0


def check_not_wide(data: bytes, name: str | os.PathLike) -> None:
    """One error naming the encoding when ``data`` (a whole text, or its first 4,096 bytes) is
    UTF-16/32, not UTF-8."""
    encoding = wide_encoding(data)
    if encoding:
        raise RnnlmError(
            f"{name}: {encoding} text, not UTF-8; convert it first, e.g. iconv -f {encoding.split()[0]} "
            "-t UTF-8 FILE > FILE.utf8"
        )


def decode_utf8(data: bytes, name: str | os.PathLike = "<bytes>", at: tuple[int, int] = (0, 0)) -> str:
    """Decode ``data`` as strict UTF-8 (a leading byte-order mark is dropped).

    Invalid bytes raise :class:`RnnlmError` naming ``name``, the byte offset and the line; the
    text is never decoded with replacement characters or another codec. ``at``: the bytes and
    line breaks before ``data`` when it is a piece of a longer text (offsets count from its start).
    """
    start, lines = at
    if start == 0:
        check_not_wide(data, name)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise RnnlmError(
            f"{name}: a binary file, not text (NUL byte at offset {start + nul}); give a plain-text "
            "corpus (an archive must be a .zip with a text member)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines + data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end]
        raise RnnlmError(
            f"{name}: not valid UTF-8 at byte offset {start + exc.start} (line {line}): {exc.reason}, "
            f"bytes {bad!r}; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return text[1:] if start == 0 and text.startswith("\ufeff") else text


def gutenberg_span(text: str) -> tuple[int, int] | None:
    """Return (start, end) of the body between Project Gutenberg markers, or None without markers.

    The body starts after the START marker line and ends before the END marker line. With only
    one of the markers, the other end of the text is the bound.
    """
    start_m = _GUTENBERG_START.search(text)
    end_m = _GUTENBERG_END.search(text, start_m.end() if start_m else 0)
    if start_m is None and end_m is None:
        return None
    start = start_m.end() if start_m else 0
    end = end_m.start() if end_m else len(text)
    return start, end


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and footer, when present.

    Keeps the lines strictly between the ``*** START OF THE/THIS PROJECT GUTENBERG EBOOK ... ***``
    line and the ``*** END OF ...`` line, without the blank lines at either end of that body (the
    line break that ends the last body line is kept). Text without markers is returned unchanged.
    """
    span = gutenberg_span(text)
    if span is None:
        return text
    body = text[span[0] : span[1]]
    lines = body.splitlines(keepends=True)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(lines)


_strip_gutenberg = strip_gutenberg  # clean_text's parameter shadows the name


LETTERS_WARN = 0.01  # letters mode warns when it drops more than this share of a text as letters of other scripts


def clean_text(text: str, mode: str = "letters", max_chars: int = 0, strip_gutenberg: bool = False) -> str:
    """Clean ``text`` by ``mode`` (see the module docstring), then keep ``max_chars`` characters.

    ``max_chars`` 0 keeps all. Raises :class:`RnnlmError` for an unknown mode, a negative
    ``max_chars``, or an empty (or whitespace-only) result.
    """
    if mode not in MODES:
        raise RnnlmError(f"clean.mode: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if max_chars < 0:
        raise RnnlmError(f"clean.max_chars: must be >= 0, got {max_chars}")
    check_not_blank(text)
    if strip_gutenberg:
        text = _strip_gutenberg(text)
    out = clean_piece(text, mode)
    check_kept(mode, len(text) if text.strip() else 0, len(out))
    if max_chars:
        out = out[:max_chars]
    check_left(bool(out.strip()), mode, max_chars, strip_gutenberg)
    return out


def clean_piece(text: str, mode: str) -> str:
    """The mode's rule alone. It is local, so a text cut after a line break or a space cleans to
    the concatenation of its pieces' cleanings (for ``letters``, joined by one space)."""
    if mode == "letters":
        cleaned = (_NON_LETTERS.sub(" ", line).strip().lower() for line in _NEWLINE.split(text))
        return " ".join(line for line in cleaned if line)
    return _NEWLINE.sub(" " if mode == "lines" else "\n", text)


def check_not_blank(text: str) -> None:
    if not text.strip():
        raise RnnlmError(
            "the input is empty" if not text else f"the input is whitespace only ({len(text):,} characters)"
        )


def check_kept(mode: str, chars_in: int, chars_out: int) -> None:
    if mode == "letters" and chars_in and chars_out < MIN_KEPT * chars_in:
        raise RnnlmError(
            f"clean.mode=letters keeps only {chars_out:,} of {chars_in:,} characters "
            f"({chars_out / chars_in:.1%}): the text is mostly not A-Z letters; use clean.mode lines or raw for it"
        )


def check_left(has_text: bool, mode: str, max_chars: int = 0, strip_gutenberg: bool = False) -> None:
    """The error for a cleaning that left nothing but whitespace (``has_text`` False)."""
    if not has_text:
        limit = f", clean.max_chars={max_chars}" if max_chars else ""
        raise RnnlmError(
            f"cleaning left no text (clean.mode={mode}{limit}, clean.strip_gutenberg={strip_gutenberg}); "
            + (
                "mode 'letters' keeps only A-Z/a-z, try mode 'lines' or 'raw' for other scripts"
                if mode == "letters"
                else "the input is empty or whitespace only"
            )
        )


def clean_like_corpus(text: str, clean: dict) -> str:
    """``text`` cleaned the way a model's corpus was (``clean``: its mode and Gutenberg rule, as
    recorded in the model file; ``max_chars`` does not apply). A text that cleaning would change
    only by trimming whitespace at its ends is kept as written, so a held-out split (which may
    begin with a space) is scored on exactly the tokens the evaluate stage scored. A line end is
    never kept as written where the corpus's mode joins lines (its tokens have none): "text\\n"
    is scored as "text" whatever else it holds."""
    mode = clean.get("mode", "raw")
    cleaned = clean_text(text, mode, 0, bool(clean.get("strip_gutenberg", False)))
    joins_lines = mode != "raw" and ("\n" in text or "\r" in text)
    return text if cleaned == text.strip() and not joins_lines else cleaned


def count_lines(text: str) -> int:
    """Lines in ``text``: line breaks (``\\r\\n``, ``\\r``, ``\\n``), plus an unterminated last line."""
    if not text:
        return 0
    breaks = len(_NEWLINE.findall(text))
    return breaks + (0 if text.endswith(("\n", "\r")) else 1)


def text_stats(text: str) -> dict:
    return {"chars": len(text), "lines": count_lines(text), "distinct_chars": len(set(text))}


def run_clean_dir(
    cfg: CleanConfig,
    raw_dir: str | os.PathLike = "data/raw",
    out_dir: str | os.PathLike = "data/clean",
    metrics_path: str | os.PathLike = "metrics/clean.json",
) -> dict:
    """The clean stage: ``raw_dir/corpus.txt`` -> ``out_dir/corpus.txt``, or for a pre-split corpus
    each of ``raw_dir/{train,val,test}.txt`` -> ``out_dir/{train,val,test}.txt`` (``clean.max_chars``
    applies to each file). Writes ``metrics_path`` with the metrics of :func:`run_clean`, per
    split under ``splits`` for a pre-split corpus; returns them."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    names = list(SPLIT_NAMES) if (raw_dir / "train.txt").exists() else ["corpus"]
    stale = ["corpus"] if names != ["corpus"] else SPLIT_NAMES
    per = {n: clean_file(cfg, raw_dir / f"{n}.txt", out_dir / f"{n}.txt") for n in names}
    for n in stale:
        (out_dir / f"{n}.txt").unlink(missing_ok=True)
    metrics = (
        per["corpus"]
        if names == ["corpus"]
        else {**{k: sum(m[k] for m in per.values()) for k in ("chars_in", "chars_out", "bytes_out")}, "splits": per}
    )
    fileio.write_json(out_dir / "source.json", text_source(raw_dir / "source.json", cfg))
    fileio.write_json(metrics_path, metrics)
    return metrics


def text_source(raw_source: Path, cfg: CleanConfig) -> dict:
    """Where the clean text came from and how it was cleaned: the corpus and its sha256 (per file of
    a pre-split corpus) from the download stage's record, and the clean mode. It travels with the
    vocabulary into every model file, so a model can clean a new text the way its corpus was."""
    try:
        raw = json.loads(Path(raw_source).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}
    sha = {k: v.get("sha256") for k, v in raw["splits"].items()} if "splits" in raw else raw.get("sha256")
    return {
        "corpus": raw.get("corpus"),
        "sha256": sha,
        "clean": {"mode": cfg.mode, "strip_gutenberg": cfg.strip_gutenberg},
    }


def _came_from(raw_path: Path) -> str:
    """ " (from <the user's source>)" for a file the download stage wrote, from its source.json."""
    try:
        record = json.loads((raw_path.parent / "source.json").read_text(encoding="utf-8"))
        record = record["splits"][raw_path.stem] if "splits" in record else record
        return f" (from {record['source']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def clean_file(
    cfg: CleanConfig,
    raw_path: str | os.PathLike = "data/raw/corpus.txt",
    out_path: str | os.PathLike = "data/clean/corpus.txt",
) -> dict:
    """Read ``raw_path``, clean by ``cfg`` (the ``clean`` params section), write ``out_path``
    (UTF-8) atomically; return the metrics.

    Metrics: ``mode``, ``max_chars``, ``strip_gutenberg``, ``gutenberg_markers`` (whether markers
    were found), ``chars_in``/``chars_out``, ``lines_in``/``lines_out``,
    ``distinct_chars_in``/``distinct_chars_out``, ``bytes_out``.
    """
    raw_path = Path(raw_path)
    try:
        data = raw_path.read_bytes()
    except FileNotFoundError:
        raise RnnlmError(f"{raw_path}: not found; run the download stage first (dvc repro download)") from None
    except OSError as exc:
        raise RnnlmError(f"{raw_path}: cannot read: {exc.strerror or exc}") from None
    text = decode_utf8(data, f"{raw_path}{_came_from(raw_path)}")
    mode, max_chars, strip = cfg.mode, cfg.max_chars, cfg.strip_gutenberg
    try:
        out = clean_text(text, mode, max_chars, strip)
    except RnnlmError as exc:
        raise RnnlmError(f"{raw_path}: {exc}") from None
    s_in, s_out = text_stats(text), text_stats(out)
    encoded = out.encode("utf-8")
    metrics = {
        "mode": mode,
        "max_chars": max_chars,
        "strip_gutenberg": strip,
        "gutenberg_markers": gutenberg_span(text) is not None,
        "chars_in": s_in["chars"],
        "chars_out": s_out["chars"],
        "lines_in": s_in["lines"],
        "lines_out": s_out["lines"],
        "distinct_chars_in": s_in["distinct_chars"],
        "distinct_chars_out": s_out["distinct_chars"],
        "bytes_out": len(encoded),
    }
    if mode == "letters":
        metrics["letters_dropped"] = letters_dropped(text)
    fileio.write_bytes(out_path, encoded)
    return metrics


def letters_dropped(text: str) -> dict:
    """What ``letters`` mode drops that is a letter in some script (Chinese characters, accented
    or Cyrillic letters: words, not punctuation): their count, distinct count and a few examples."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha() and not ("a" <= ch.lower() <= "z" and ch.isascii()):
            counts[ch] = counts.get(ch, 0) + 1
    common = sorted(counts, key=lambda c: (-counts[c], c))[:5]
    return {"chars": sum(counts.values()), "distinct": len(counts), "examples": "".join(common)}


def letters_warning(m: dict) -> str | None:
    """A warning when ``letters`` mode dropped more than LETTERS_WARN of a text's characters as
    letters of other scripts (the text-share refusal in :func:`clean_text` does not see a mixed text)."""
    dropped = m.get("letters_dropped") or {}
    if dropped.get("chars", 0) <= LETTERS_WARN * m["chars_in"]:
        return None
    return (
        f"clean.mode=letters dropped {dropped['chars']:,} letters outside a-z ({dropped['chars'] / m['chars_in']:.1%} "
        f"of the text; {dropped['distinct']:,} distinct, e.g. {dropped['examples']}): use clean.mode lines or "
        "raw to keep them"
    )
