"""The vocab stage's work: tokenize the cleaned text, split it, build the vocabulary from the
train split, encode the splits, and describe the corpus."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import RnnlmError
from .fileio import atomic_path, write_json, write_text
from .vocab import Vocab, oov_rate, split_bounds, tokenize

SPLITS = ("train", "val", "test")


def build(text: str, cfg: dict) -> tuple[Vocab, dict[str, np.ndarray], dict, dict[str, list[str]]]:
    tokens = tokenize(text, cfg["level"])
    if not tokens:
        raise RnnlmError("data/clean/corpus.txt has no tokens")
    slices = split_bounds(len(tokens), cfg["split"])
    parts = {name: tokens[s] for name, s in zip(SPLITS, slices)}
    vocab = Vocab.build(parts["train"], cfg["level"], cfg["min_freq"], cfg["reserved"])
    encoded = {name: vocab.encode(parts[name]) for name in SPLITS}
    stats = {
        "level": cfg["level"],
        "vocab_size": len(vocab),
        "tokens": {name: len(parts[name]) for name in SPLITS},
        "oov_rate": {name: round(oov_rate(vocab, parts[name]), 6) for name in ("val", "test")},
    }
    return vocab, encoded, stats, parts


def save_tokens(path: Path, ids: np.ndarray) -> None:
    dtype = np.uint16 if ids.max(initial=0) < 2**16 else np.int32
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, ids.astype(dtype))


def load_tokens(path: str | Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.int64)
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


def write_outputs(vocab, encoded, stats, data_dir: Path = Path("data"), metrics_dir: Path = Path("metrics")) -> None:
    from .plots import zipf_plot

    write_json(data_dir / "vocab.json", vocab.to_dict())
    for name, ids in encoded.items():
        save_tokens(data_dir / "tokens" / f"{name}.npy", ids)
    write_json(metrics_dir / "corpus.json", stats)
    table = frequency_table(vocab)
    write_text(metrics_dir / "vocab" / "token_freq.csv", table.to_csv(index=False))
    regular = table[table["count"] > 0].sort_values("count", ascending=False)["count"].to_numpy()
    zipf_plot(regular, metrics_dir / "vocab" / "zipf.png",
              f"Zipf plot: {stats['level']} tokens of the train split ({len(vocab)} types)")
