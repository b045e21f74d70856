"""The vocab stage: tokenization, the vocabulary, the train/val/test split, and the stage's
work (tokenize the cleaned text, split it or take the corpus's own files, build the vocabulary
from the train split, encode the splits, describe the corpus).

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
from pathlib import Path

import numpy as np

from . import paths
from .errors import ParamError, RnnlmError
from .fileio import atomic_path, write_json, write_text
from .params import SPLIT_NAMES as SPLITS
from .params import VocabConfig

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


MIN_SPLIT_TOKENS = {"train": 2, "val": 2, "test": 2}  # an input and its next token


def read_clean(clean_dir: Path) -> str | dict[str, str]:
    """The clean stage's output: ``corpus.txt`` (one text, split here by ``vocab.split``) or
    ``train.txt``, ``val.txt``, ``test.txt`` (a pre-split corpus)."""
    clean_dir = Path(clean_dir)
    if (clean_dir / "train.txt").exists():
        return {s: _read(clean_dir / f"{s}.txt") for s in SPLITS}
    return _read(clean_dir / "corpus.txt")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RnnlmError(f"{path}: not found; run `dvc repro clean` first") from None


def _user_file(source: dict, split: str) -> str:
    """The file a pre-split corpus's ``split`` came from, as download.corpus names it."""
    given = (source.get("corpus") or {}).get(split) if isinstance(source.get("corpus"), dict) else None
    given = given.get("source") if isinstance(given, dict) else given
    return f" ({given})" if isinstance(given, str) else ""


def split_tokens(text: str | dict[str, str], cfg: VocabConfig, source: dict | None = None) -> dict[str, list[str]]:
    """Token lists per split: a pre-split corpus's own files, or ``vocab.split`` of one text.
    ``source``: the clean stage's source.json (names the user's files and the clean mode)."""
    source = source or {}
    tok = dict(level=cfg.level, tokenizer=cfg.tokenizer, eos=cfg.eos)
    texts = text.values() if isinstance(text, dict) else [text]
    if cfg.eos and not any("\n" in t for t in texts):
        mode = (source.get("clean") or {}).get("mode")
        raise ParamError(
            "vocab.eos",
            f"true, but the cleaned text has no line ends to mark (clean.mode "
            f"{mode or 'letters or lines'} joins all lines into one; raw keeps them): use "
            "clean.mode raw, or vocab.eos false",
        )
    if isinstance(text, dict):
        parts = {name: tokenize(text[name], **tok) for name in SPLITS}
        for name, tokens in parts.items():
            if len(tokens) < MIN_SPLIT_TOKENS[name]:
                raise RnnlmError(
                    f"the {name} split has {len(tokens)} token(s) after cleaning (data/clean/{name}.txt) "
                    f"and needs at least {MIN_SPLIT_TOKENS[name]}: check download.corpus.{name}"
                    f"{_user_file(source, name)} and clean.mode"
                )
        return parts
    tokens = tokenize(text, **tok)
    if not tokens:
        raise RnnlmError("data/clean/corpus.txt has no tokens")
    parts = {name: tokens[s] for name, s in zip(SPLITS, split_bounds(len(tokens), cfg.split))}
    for name, part in parts.items():
        if len(part) < MIN_SPLIT_TOKENS[name]:
            raise ParamError(
                "vocab.split",
                f"the {name} split gets {len(part)} of the corpus's {len(tokens)} tokens, "
                f"and needs at least {MIN_SPLIT_TOKENS[name]}: give it a larger fraction, "
                "or use a longer corpus",
            )
    return parts


def read_source(clean_dir: Path) -> dict:
    """The clean stage's ``source.json`` (corpus, checksum, clean mode); {} when absent."""
    try:
        return json.loads((Path(clean_dir) / "source.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise RnnlmError(f"{Path(clean_dir) / 'source.json'}: not valid JSON: {exc}") from None


def build(
    text: str | dict[str, str], cfg: VocabConfig, source: dict | None = None
) -> tuple[Vocab, dict[str, np.ndarray], dict, dict[str, list[str]]]:
    parts = split_tokens(text, cfg, source)
    vocab = Vocab.build(parts["train"], cfg.level, cfg.min_freq, cfg.reserved, cfg.tokenizer, cfg.eos)
    vocab.source = dict(source or {})
    encoded = {name: vocab.encode(parts[name]) for name in SPLITS}
    stats = {
        "level": cfg.level,
        "presplit": isinstance(text, dict),
        "vocab_size": len(vocab),
        "tokens": {name: len(parts[name]) for name in SPLITS},
        "oov_rate": {name: round(oov_rate(vocab, parts[name]), 6) for name in ("val", "test")},
        "unk_rate": {name: round(unk_rate(vocab, encoded[name]), 6) for name in SPLITS},
    }
    return vocab, encoded, stats, parts


def save_tokens(path: Path, ids: np.ndarray) -> None:
    dtype = np.uint16 if ids.max(initial=0) < 2**16 else np.int32
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, ids.astype(dtype))


def load_tokens(path: str | Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.int32)  # 4 bytes a token in memory
    except FileNotFoundError:
        raise RnnlmError(f"{path}: not found; run `dvc repro vocab` first") from None
    except ValueError as exc:
        raise RnnlmError(f"{path}: not a token array: {exc}") from None


def load_splits(root: Path = paths.TOKENS) -> dict[str, np.ndarray]:
    return {name: load_tokens(root / f"{name}.npy") for name in SPLITS}


def frequency_table(vocab: Vocab):
    import pandas as pd  # here: the sample stage and the CLI import this module too

    total = sum(vocab.counts)
    df = pd.DataFrame({"id": range(len(vocab)), "token": vocab.tokens, "count": vocab.counts})
    df["frequency"] = (df["count"] / total).round(8) if total else 0.0
    return df


def heldout_text(vocab: Vocab, tokens: list[str]) -> str:
    """A split's tokens as text that tokenizes back to them (`rnnlm score` reads it)."""
    return "".join(tokens) if vocab.level == "char" else detokenize(tokens, vocab.level)


def write_outputs(
    vocab,
    encoded,
    stats,
    root: Path = Path("."),
    parts: dict[str, list[str]] | None = None,
) -> None:
    """data/vocab.json, data/tokens/*.npy, metrics/corpus.json, metrics/vocab/*; with ``parts``
    (the token strings per split) also data/heldout/{val,test}.txt, the held-out splits as text."""
    from .plots import zipf_plot

    write_json(root / paths.VOCAB, vocab.to_dict())
    for name in ("val", "test") if parts is not None else ():
        write_text(root / paths.HELDOUT / f"{name}.txt", heldout_text(vocab, parts[name]))
    for name, ids in encoded.items():
        save_tokens(root / paths.TOKENS / f"{name}.npy", ids)
    write_json(root / paths.CORPUS_METRICS, stats)
    table = frequency_table(vocab)
    write_text(root / paths.VOCAB_METRICS / "token_freq.csv", table.to_csv(index=False))
    regular = table[table["count"] > 0].sort_values("count", ascending=False)["count"].to_numpy()
    zipf_plot(
        regular,
        root / paths.VOCAB_METRICS / "zipf.png",
        f"Zipf plot: {stats['level']} tokens of the train split ({len(vocab)} types)",
    )
