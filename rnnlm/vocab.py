"""Tokenization, the vocabulary, and the train/val/test split.

The vocabulary is built from the train split only: `<unk>` is index 0, then the reserved
tokens in the order given, then every other token with count >= min_freq, most frequent
first, ties broken by the token's text so the order never depends on dict iteration.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ParamError, RnnlmError

UNK = "<unk>"
EOS = "<eos>"
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str, tokenizer: str = "regex", eos: bool = False) -> list[str]:
    """Split ``text`` into tokens.

    * ``char``: every character, spaces and newlines included.
    * ``word`` with ``tokenizer="regex"``: runs of word characters, and each punctuation mark is a
      token of its own (``<unk>`` becomes ``<``, ``unk``, ``>``).
    * ``word`` with ``tokenizer="whitespace"``: split on whitespace and nothing else, the
      convention of pre-tokenized corpora such as the Penn Treebank (pytorch/examples
      word_language_model): ``n't`` and a literal ``<unk>`` stay one token each.

    ``eos`` (word level) appends ``<eos>`` to every line, as that community does: a text of N
    lines (the last one with or without its line break) gets N ``<eos>`` tokens.
    """
    if level == "char":
        return list(text)
    if level != "word":
        raise ParamError("vocab.level", f"unknown level {level!r}; choose char or word")
    split = str.split if tokenizer == "whitespace" else _WORD_RE.findall
    if not eos:
        return split(text)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the line break that ends the last line does not start another one
    out: list[str] = []
    for line in lines:
        out.extend(split(line))
        out.append(EOS)
    return out


def detokenize(tokens: Iterable[str], level: str) -> str:
    """Inverse of :func:`tokenize` as far as it goes: words joined by spaces, ``<eos>`` a line break."""
    if level == "char":
        return "".join(tokens)
    lines, line = [], []
    for t in tokens:
        if t == EOS:
            lines.append(" ".join(line))
            line = []
        else:
            line.append(t)
    return "\n".join(lines + [" ".join(line)])


@dataclass
class Vocab:
    tokens: list[str]
    counts: list[int]
    level: str = "char"
    reserved: list[str] = field(default_factory=list)
    tokenizer: str = "regex"  # word level: how text is split (see tokenize)
    eos: bool = False  # word level: <eos> at every line end
    source: dict = field(default_factory=dict)  # the corpus and its cleaning (clean.text_source)

    def __post_init__(self):
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(
        cls,
        tokens: Sequence[str],
        level: str,
        min_freq: int = 1,
        reserved: Sequence[str] = (),
        tokenizer: str = "regex",
        eos: bool = False,
    ) -> Vocab:
        counter = Counter(tokens)
        specials = [UNK] + [r for r in dict.fromkeys(reserved) if r != UNK]
        regular = sorted(
            ((t, c) for t, c in counter.items() if c >= min_freq and t not in specials),
            key=lambda tc: (-tc[1], tc[0]),
        )
        if not regular:
            raise ParamError(
                "vocab.min_freq",
                f"vocabulary is empty: no token of the train split occurs at least {min_freq} times",
            )
        kept = {t for t, _ in regular}
        unk_count = sum(c for t, c in counter.items() if t not in kept and t not in specials[1:])
        counts = [unk_count] + [counter.get(r, 0) for r in specials[1:]] + [c for _, c in regular]
        return cls(specials + [t for t, _ in regular], counts, level, list(specials[1:]), tokenizer, eos)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def unk(self) -> int:
        return 0

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(t, 0) for t in tokens), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def to_text(self, ids: Iterable[int]) -> str:
        return detokenize(self.decode(ids), self.level)

    def tokenize(self, text: str, eos: bool | None = None) -> list[str]:
        """``text`` split the way this vocabulary's corpus was (``eos=False`` for a prefix)."""
        return tokenize(text, self.level, self.tokenizer, self.eos if eos is None else eos)

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        return [t for t in tokens if t not in self.index]

    # --- persistence (JSON, never pickle) ---
    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "reserved": self.reserved,
            "tokenizer": self.tokenizer,
            "eos": self.eos,
            "source": self.source,
            "size": len(self.tokens),
            "fingerprint": self.fingerprint,
            "tokens": self.tokens,
            "counts": self.counts,
        }

    @property
    def fingerprint(self) -> str:
        """sha256 of the level and the ordered token list: identifies id <-> token mapping."""
        payload = json.dumps([self.level, self.tokens], ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(payload).hexdigest()

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        try:
            vocab = cls(
                list(d["tokens"]),
                [int(c) for c in d["counts"]],
                d["level"],
                list(d.get("reserved", [])),
                str(d.get("tokenizer", "regex")),
                bool(d.get("eos", False)),
                dict(d.get("source") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RnnlmError(f"vocabulary file is malformed: {exc}") from None
        if not vocab.tokens or vocab.tokens[0] != UNK or len(vocab.tokens) != len(vocab.counts):
            raise RnnlmError("vocabulary file is malformed: <unk> must be token 0 and counts must match tokens")
        return vocab

    @classmethod
    def load(cls, path) -> Vocab:
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except FileNotFoundError:
            raise RnnlmError(f"{path}: not found; run `dvc repro vocab` first") from None
        except json.JSONDecodeError as exc:
            raise RnnlmError(f"{path}: not valid JSON: {exc}") from None


def split_bounds(n: int, fractions: Sequence[float]) -> tuple[slice, slice, slice]:
    """Contiguous, in-order train / val / test slices of ``n`` tokens.

    Train starts at the beginning, test is the end of the text, val sits right before
    test. When the fractions sum below 1 the unused tokens lie between train and val.
    """
    f_train, f_val, f_test = fractions
    n_test = int(round(n * f_test))
    n_val = int(round(n * f_val))
    n_train = min(int(round(n * f_train)), n - n_val - n_test)
    for name, size in (("train", n_train), ("val", n_val), ("test", n_test)):
        if size <= 0:
            raise ParamError(
                "vocab.split",
                f"the {name} split is empty ({n} tokens in the corpus, fractions {list(fractions)}); "
                "use a larger corpus or a larger fraction",
            )
    return slice(0, n_train), slice(n - n_test - n_val, n - n_test), slice(n - n_test, n)


def oov_rate(vocab: Vocab, tokens: Sequence[str]) -> float:
    """Share of ``tokens`` absent from the vocabulary (mapped to ``<unk>`` by encoding)."""
    if not tokens:
        return 0.0
    index = vocab.index
    return sum(1 for t in tokens if t not in index) / len(tokens)


def unk_rate(vocab: Vocab, ids: np.ndarray) -> float:
    """Share of encoded tokens that are ``<unk>``: the OOV ones plus a literal ``<unk>`` in the text
    (pre-processed corpora such as the Penn Treebank write rare words that way)."""
    return float(np.mean(ids == vocab.unk)) if len(ids) else 0.0
