"""The vocab stage's work: tokenize the cleaned text, split it (or take the corpus's own train /
val / test files), build the vocabulary from the train split, encode the splits, and describe
the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ParamError, RnnlmError
from .fileio import atomic_path, write_json, write_text
from .params import SPLIT_NAMES as SPLITS
from .params import VocabConfig
from .vocab import Vocab, detokenize, oov_rate, split_bounds, tokenize, unk_rate

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


def load_splits(root: Path = Path("data/tokens")) -> dict[str, np.ndarray]:
    return {name: load_tokens(root / f"{name}.npy") for name in SPLITS}


def frequency_table(vocab: Vocab) -> pd.DataFrame:
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
    data_dir: Path = Path("data"),
    metrics_dir: Path = Path("metrics"),
    parts: dict[str, list[str]] | None = None,
) -> None:
    """data/vocab.json, data/tokens/*.npy, metrics/corpus.json, metrics/vocab/*; with ``parts``
    (the token strings per split) also data/heldout/{val,test}.txt, the held-out splits as text."""
    from .plots import zipf_plot

    write_json(data_dir / "vocab.json", vocab.to_dict())
    for name in ("val", "test") if parts is not None else ():
        write_text(data_dir / "heldout" / f"{name}.txt", heldout_text(vocab, parts[name]))
    for name, ids in encoded.items():
        save_tokens(data_dir / "tokens" / f"{name}.npy", ids)
    write_json(metrics_dir / "corpus.json", stats)
    table = frequency_table(vocab)
    write_text(metrics_dir / "vocab" / "token_freq.csv", table.to_csv(index=False))
    regular = table[table["count"] > 0].sort_values("count", ascending=False)["count"].to_numpy()
    zipf_plot(
        regular,
        metrics_dir / "vocab" / "zipf.png",
        f"Zipf plot: {stats['level']} tokens of the train split ({len(vocab)} types)",
    )
