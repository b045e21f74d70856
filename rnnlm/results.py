"""The results table: one row per model, baseline and mixture (metrics/eval/results.csv), and how
people see it (metrics/eval/results.md, the HTML report). pandas only: the report stage reads
results.csv without importing the models."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

DIGITS = 6  # rounding of the floats in eval.json and results.csv (keeps them stable across BLAS builds)
TEXT_COLUMNS = ("name", "kind", "impl", "unit")
PERPLEXITIES = ("train_perplexity", "val_perplexity", "test_perplexity")

# column -> header shown, where they differ (display_table adds bits_per_char -> bits/char)
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
    """The CSV table, sorted by test perplexity (then name). No wall times, so an identical retrain
    leaves it unchanged (the report adds them: :func:`with_timing`)."""
    bits = "bits_per_char" if level == "char" else "bits_per_word"
    cols = ["name", "kind", "impl", "unit", "params", *PERPLEXITIES, bits, "best_step"]
    df = pd.DataFrame([{**r, bits: r["bits_per_token"], "unit": level} for r in rows], columns=cols)
    df = df.sort_values(["test_perplexity", "name"], kind="mergesort").reset_index(drop=True)
    df["params"] = df["params"].astype("int64")
    df["best_step"] = df["best_step"].astype("Int64")
    for c in (*PERPLEXITIES, bits):
        df[c] = df[c].astype(float).round(DIGITS)
    return df


def read_results(path: Path) -> pd.DataFrame:
    """metrics/eval/results.csv back as :func:`results_table` wrote it (integer columns kept)."""
    blank = {c: [""] for c in ("train_perplexity", "val_perplexity", "best_step")}
    return pd.read_csv(path, dtype={"params": "int64", "best_step": "Int64"}, keep_default_na=False, na_values=blank)


def with_timing(df: pd.DataFrame, timing: dict[str, dict]) -> pd.DataFrame:
    """``df`` with the train stages' wall-clock columns (metrics/timing/<model>.json) before
    ``best_step``, blank for rows without a timing record (baselines, mixtures)."""
    df = df.copy()
    at = df.columns.get_loc("best_step")
    for i, c in enumerate(("train_seconds", "tokens_per_second")):
        df.insert(at + i, c, [timing[n][c] if n in timing else math.nan for n in df["name"]])
    return df


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table as results.md and the HTML report show it: rounded strings, an en dash where a
    value does not apply, readable headers."""
    bits = next(c for c in df.columns if c.startswith("bits_per_"))
    specs = {
        "params": ",d",
        **dict.fromkeys(PERPLEXITIES, ".3f"),
        bits: ".4f",
        "train_seconds": ".1f",
        "tokens_per_second": ",.0f",
        "best_step": "d",
    }

    def fmt(v, spec):
        return "–" if pd.isna(v) else format(v, spec)

    shown = pd.DataFrame({c: [fmt(v, specs[c]) if c in specs else str(v) for v in df[c]] for c in df.columns})
    return shown.rename(columns={**MD_HEADERS, bits: bits.replace("bits_per_", "bits/")})


def markdown_table(df: pd.DataFrame) -> str:
    """:func:`display_table` as a Markdown pipe table (metrics/eval/results.md)."""
    align = ["left" if c in TEXT_COLUMNS else "right" for c in df.columns]
    return display_table(df).to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
