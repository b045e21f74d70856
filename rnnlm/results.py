"""The results table: one row per model and baseline (metrics/eval/results.csv), and how it is
shown to people (metrics/eval/results.md and the HTML report). pandas only, so the report stage
reads results.csv without importing the models."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

DIGITS = 6  # rounding of the floats in eval.json / results.csv (keeps them stable across BLAS builds)
TEXT_COLUMNS = ("name", "kind", "impl", "unit")

# results.csv column -> results.md header, where they differ (bits_per_char -> bits/char is added in display_table)
MD_HEADERS = {
    "name": "model",
    "train_perplexity": "train ppl",
    "val_perplexity": "val ppl",
    "test_perplexity": "test ppl",
    "train_seconds": "train time (s)",
    "tokens_per_second": "tokens/s",
    "best_step": "best step",
}


def results_table(rows: list[dict], level: str) -> pd.DataFrame:
    """The CSV table: one row per model/baseline, sorted by test perplexity (then name)."""
    bits = "bits_per_char" if level == "char" else "bits_per_word"
    cols = [
        "name",
        "kind",
        "impl",
        "unit",
        "params",
        "train_perplexity",
        "val_perplexity",
        "test_perplexity",
        bits,
        "train_seconds",
        "tokens_per_second",
        "best_step",
    ]
    df = pd.DataFrame([{**r, bits: r["bits_per_token"], "unit": level} for r in rows], columns=cols)
    df = df.sort_values(["test_perplexity", "name"], kind="mergesort").reset_index(drop=True)
    df["params"] = df["params"].astype("int64")
    df["best_step"] = df["best_step"].astype("Int64")
    for c in ("train_perplexity", "val_perplexity", "test_perplexity", bits, "train_seconds", "tokens_per_second"):
        df[c] = df[c].astype(float).round(DIGITS)
    return df


def read_results(path: Path) -> pd.DataFrame:
    """metrics/eval/results.csv back as :func:`results_table` wrote it (integer columns kept)."""
    return pd.read_csv(
        path,
        dtype={"params": "int64", "best_step": "Int64"},
        keep_default_na=False,
        na_values={
            c: [""] for c in ("train_perplexity", "val_perplexity", "train_seconds", "tokens_per_second", "best_step")
        },
    )


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`results_table` as people read it: rounded strings, an en dash where a value does not
    apply, human column heads. results.md and the HTML report both show this."""
    bits = next(c for c in df.columns if c.startswith("bits_per_"))

    def fmt(v, spec):
        return "–" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    specs = {
        "params": ",d",
        "train_perplexity": ".3f",
        "val_perplexity": ".3f",
        "test_perplexity": ".3f",
        bits: ".4f",
        "train_seconds": ".1f",
        "tokens_per_second": ",.0f",
        "best_step": "d",
    }
    shown = pd.DataFrame({c: [fmt(v, specs[c]) if c in specs else str(v) for v in df[c]] for c in df.columns})
    return shown.rename(columns={**MD_HEADERS, bits: bits.replace("bits_per_", "bits/")})


def markdown_table(df: pd.DataFrame) -> str:
    """:func:`display_table` as a Markdown pipe table (metrics/eval/results.md)."""
    align = ["left" if c in TEXT_COLUMNS else "right" for c in df.columns]
    return display_table(df).to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
