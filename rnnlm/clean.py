"""Clean the raw corpus into the text the vocabulary stage reads (the ``clean`` stage).

``clean.mode`` is one of these rules, then ``clean.max_chars`` (0 = all) keeps the first N characters:

- ``letters``: d2l's ``re.sub('[^A-Za-z]+', ' ', line).strip().lower()``, empty lines dropped, the lines
  joined by one space (d2l keeps a list of lines), so the time machine has the book's 27 characters.
- ``lines``: every character kept; each line break (``\\r\\n``, ``\\r`` or ``\\n``) becomes one space.
- ``raw``: every character kept; line endings become ``\\n``.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from pathlib import Path

from . import fileio
from .errors import RnnlmError
from .params import SPLIT_NAMES, CleanConfig

MODES = ("letters", "lines", "raw")
MIN_KEPT = 0.10  # mode letters refuses a text it would shrink below this share (another script)
LETTERS_WARN = 0.01  # and warns when it drops more than this share as letters of other scripts

_NEWLINE = re.compile(r"\r\n|\r|\n")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
# "*** START OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***" (also THIS, E-BOOK, any case, any spacing)
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


# --------------------------------------------------------------------------- decoding
def wide_encoding(data: bytes) -> str | None:
    """The UTF-16/32 encoding of ``data``, by its byte-order mark, or for UTF-16 without one by its
    NUL bytes (most odd or even bytes of a Latin-script text); None otherwise."""
    head = data[:4096]
    for bom, name in BOMS:
        if data.startswith(bom):  # a real one has whole code units and decodes
            whole = head[: len(head) // 4 * 4]
            try:
                whole.decode(name)
            except UnicodeDecodeError:
                return None
            unit = 4 if name.startswith("UTF-32") else 2
            return name if whole and len(data) % unit == 0 else None
    if len(head) >= 4 and b"\x00" in head:
        for name, zeros, chars in (("UTF-16LE", head[1::2], head[0::2]), ("UTF-16BE", head[0::2], head[1::2])):
            if zeros.count(0) > 0.9 * len(zeros) and chars.count(0) < 0.5 * len(chars):  # not all NULs
                return f"{name} (no byte-order mark)"
    return None


def check_not_wide(data: bytes, name: str | os.PathLike) -> None:
    """One error naming the encoding when ``data`` (a text, or its first 4,096 bytes) is UTF-16/32."""
    encoding = wide_encoding(data)
    if encoding:
        raise RnnlmError(
            f"{name}: {encoding} text, not UTF-8; convert it first, e.g. iconv -f {encoding.split()[0]} "
            "-t UTF-8 FILE > FILE.utf8"
        )


def decode_utf8(data: bytes, name: str | os.PathLike = "<bytes>", at: tuple[int, int] = (0, 0)) -> str:
    """``data`` as strict UTF-8 (a leading byte-order mark dropped); an error names the offset and line.
    ``at``: the bytes and line breaks before ``data`` when it is a piece of a longer text."""
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


# --------------------------------------------------------------------------- cleaning
def gutenberg_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the body between the Project Gutenberg START and END marker lines (with one
    marker, the text's other end), or None without markers."""
    start_m = _GUTENBERG_START.search(text)
    end_m = _GUTENBERG_END.search(text, start_m.end() if start_m else 0)
    if start_m is None and end_m is None:
        return None
    return (start_m.end() if start_m else 0), (end_m.start() if end_m else len(text))


def strip_gutenberg(text: str) -> str:
    """The body between Project Gutenberg markers without its blank first and last lines (the last
    body line keeps its line break); a text without markers unchanged."""
    span = gutenberg_span(text)
    if span is None:
        return text
    lines = text[span[0] : span[1]].splitlines(keepends=True)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(lines)


_strip_gutenberg = strip_gutenberg  # clean_text's parameter shadows the name


def clean_text(text: str, mode: str = "letters", max_chars: int = 0, strip_gutenberg: bool = False) -> str:
    """``text`` cleaned by ``mode``, then cut to ``max_chars`` (0 = all); an error if nothing is left."""
    if mode not in MODES:
        raise RnnlmError(f"clean.mode: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if max_chars < 0:
        raise RnnlmError(f"clean.max_chars: must be >= 0, got {max_chars}")
    if not text.strip():
        raise RnnlmError(
            "the input is empty" if not text else f"the input is whitespace only ({len(text):,} characters)"
        )
    if strip_gutenberg:
        text = _strip_gutenberg(text)
    out = clean_piece(text, mode)
    check_kept(mode, len(text) if text.strip() else 0, len(out))
    if max_chars:
        out = out[:max_chars]
    check_left(bool(out.strip()), mode, max_chars, strip_gutenberg)
    return out


def clean_piece(text: str, mode: str) -> str:
    """The mode's rule alone. It is line-local, so a text cut after a line break or a space cleans to
    the concatenation of its pieces' cleanings (for ``letters``, joined by one space)."""
    if mode == "letters":
        cleaned = (_NON_LETTERS.sub(" ", line).strip().lower() for line in _NEWLINE.split(text))
        return " ".join(line for line in cleaned if line)
    return _NEWLINE.sub(" " if mode == "lines" else "\n", text)


def check_kept(mode: str, chars_in: int, chars_out: int) -> None:
    if mode == "letters" and chars_in and chars_out < MIN_KEPT * chars_in:
        raise RnnlmError(
            f"clean.mode=letters keeps only {chars_out:,} of {chars_in:,} characters "
            f"({chars_out / chars_in:.1%}): the text is mostly not A-Z letters; use clean.mode lines or raw for it"
        )


def check_left(has_text: bool, mode: str, max_chars: int, strip_gutenberg: bool) -> None:
    """The error for a cleaning that left nothing but whitespace (``has_text`` False)."""
    if has_text:
        return
    limit = f", clean.max_chars={max_chars}" if max_chars else ""
    if mode == "letters":
        hint = "mode 'letters' keeps only A-Z/a-z, try mode 'lines' or 'raw' for other scripts"
    else:
        hint = "the input is empty or whitespace only"
    raise RnnlmError(
        f"cleaning left no text (clean.mode={mode}{limit}, clean.strip_gutenberg={strip_gutenberg}); {hint}"
    )


def clean_like_corpus(text: str, clean: dict) -> str:
    """``text`` cleaned as a model's corpus was (``clean``: the mode and Gutenberg rule its file records).

    A text that cleaning would only trim at its ends is kept as written, so a held-out split (which
    may begin with a space) is scored on the tokens the evaluate stage scored; but where the mode
    joins lines, a line end is never kept ("text\\n" is scored as "text").
    """
    mode = clean.get("mode", "raw")
    cleaned = clean_text(text, mode, 0, bool(clean.get("strip_gutenberg", False)))
    joins_lines = mode != "raw" and ("\n" in text or "\r" in text)
    return text if cleaned == text.strip() and not joins_lines else cleaned


def count_lines(text: str) -> int:
    """Line breaks (``\\r\\n``, ``\\r``, ``\\n``), plus an unterminated last line."""
    if not text:
        return 0
    return len(_NEWLINE.findall(text)) + (0 if text.endswith(("\n", "\r")) else 1)


# --------------------------------------------------------------------------- the stage
def run_clean_dir(
    cfg: CleanConfig, raw_dir: str | os.PathLike, out_dir: str | os.PathLike, metrics_path: str | os.PathLike
) -> dict:
    """The clean stage: ``raw_dir/corpus.txt``, or each of a pre-split corpus's ``{train,val,test}.txt``,
    cleaned into ``out_dir``; writes and returns the metrics (per file under ``splits``)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    presplit = (raw_dir / "train.txt").exists()
    names = SPLIT_NAMES if presplit else ("corpus",)
    per = {n: clean_file(cfg, raw_dir / f"{n}.txt", out_dir / f"{n}.txt") for n in names}
    for n in ("corpus",) if presplit else SPLIT_NAMES:  # the other layout's files, from an earlier run
        (out_dir / f"{n}.txt").unlink(missing_ok=True)
    if presplit:
        totals = {k: sum(m[k] for m in per.values()) for k in ("chars_in", "chars_out", "bytes_out")}
        metrics = {**totals, "splits": per}
    else:
        metrics = per["corpus"]
    fileio.write_json(out_dir / "source.json", text_source(raw_dir / "source.json", cfg))
    fileio.write_json(metrics_path, metrics)
    return metrics


def text_source(raw_source: Path, cfg: CleanConfig) -> dict:
    """The corpus, its sha256 (per file of a pre-split one) and how it was cleaned. It travels with the
    vocabulary into every model file, so a model can clean a new text the way its corpus was."""
    try:
        raw = json.loads(Path(raw_source).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}
    sha = {k: v.get("sha256") for k, v in raw["splits"].items()} if "splits" in raw else raw.get("sha256")
    clean = {"mode": cfg.mode, "strip_gutenberg": cfg.strip_gutenberg}
    return {"corpus": raw.get("corpus"), "sha256": sha, "clean": clean}


def _came_from(raw_path: Path) -> str:
    """ " (from <the user's source>)" for a file the download stage wrote, from its source.json."""
    try:
        record = json.loads((raw_path.parent / "source.json").read_text(encoding="utf-8"))
        record = record["splits"][raw_path.stem] if "splits" in record else record
        return f" (from {record['source']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def clean_file(cfg: CleanConfig, raw_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Clean ``raw_path`` into ``out_path`` (UTF-8, written atomically); return its metrics."""
    raw_path = Path(raw_path)
    try:
        data = raw_path.read_bytes()
    except FileNotFoundError:
        raise RnnlmError(f"{raw_path}: not found; run the download stage first (dvc repro download)") from None
    except OSError as exc:
        raise RnnlmError(f"{raw_path}: cannot read: {exc.strerror or exc}") from None
    text = decode_utf8(data, f"{raw_path}{_came_from(raw_path)}")
    try:
        out = clean_text(text, cfg.mode, cfg.max_chars, cfg.strip_gutenberg)
    except RnnlmError as exc:
        raise RnnlmError(f"{raw_path}: {exc}") from None
    encoded = out.encode("utf-8")
    metrics = {
        "mode": cfg.mode,
        "max_chars": cfg.max_chars,
        "strip_gutenberg": cfg.strip_gutenberg,
        "gutenberg_markers": gutenberg_span(text) is not None,
        "chars_in": len(text),
        "chars_out": len(out),
        "lines_in": count_lines(text),
        "lines_out": count_lines(out),
        "distinct_chars_in": len(set(text)),
        "distinct_chars_out": len(set(out)),
        "bytes_out": len(encoded),
    }
    if cfg.mode == "letters":  # the letters of other scripts it drops (Chinese, accented, Cyrillic...)
        dropped = Counter(ch for ch in text if ch.isalpha() and ch not in string.ascii_letters)
        common = sorted(dropped, key=lambda c: (-dropped[c], c))[:5]
        metrics["letters_dropped"] = {"chars": dropped.total(), "distinct": len(dropped), "examples": "".join(common)}
    fileio.write_bytes(out_path, encoded)
    return metrics


def letters_warning(m: dict) -> str | None:
    """A warning when ``letters`` mode dropped over LETTERS_WARN of a text as letters of other scripts
    (the MIN_KEPT refusal does not see a mixed text)."""
    dropped = m.get("letters_dropped") or {}
    if dropped.get("chars", 0) <= LETTERS_WARN * m["chars_in"]:
        return None
    return (
        f"clean.mode=letters dropped {dropped['chars']:,} letters outside a-z ({dropped['chars'] / m['chars_in']:.1%} "
        f"of the text; {dropped['distinct']:,} distinct, e.g. {dropped['examples']}): use clean.mode lines or "
        "raw to keep them"
    )
