"""The report stage's work: one self-contained HTML page, ``reports/report.html``.

It shows the corpus summary (metrics/corpus.json), the headline numbers (metrics/eval.json), the
results table (metrics/eval/results.csv) with each model's training time and throughput
(metrics/timing/<model>.json) joined in, the figures as base64 ``data:`` URIs and the samples
(samples/<model>.txt). Plain HTML and inline CSS: no JavaScript, no network resources, no
timestamps, so the same inputs give the same bytes. It reads files only, so it imports nothing
of the package beyond the file and error helpers and the results table.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from . import paths
from .errors import RnnlmError
from .fileio import read_stage_json, stage_output, write_text
from .results import TEXT_COLUMNS, display_table, read_results, with_timing

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TITLE = "Language models: results"

FIGURES = (  # (path, producing stage, caption)
    (
        paths.EVAL_DIR / "learning_curves.png",
        "evaluate",
        "Learning curves: training (dashed) and validation (solid) perplexity by optimizer step.",
    ),
    (
        paths.EVAL_DIR / "test_perplexity.png",
        "evaluate",
        "Test perplexity of every model, model + Kneser-Ney mixture (dotted) and baseline (hatched grey).",
    ),
    (paths.VOCAB_METRICS / "zipf.png", "vocab", "Zipf plot of the train split's token frequencies."),
)

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.center, th.center { text-align: center; }
tr.baseline td { color: #666; font-style: italic; }
tr.best td { font-weight: bold; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: .7em; white-space: pre-wrap;
      word-wrap: break-word; font-size: .9em; }
.note { color: #555; font-size: .9em; }
"""


def png_data_uri(path: Path, stage: str) -> str:
    data = stage_output(path, stage).read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise RnnlmError(f"{path}: not a PNG image; rerun `dvc repro {stage}`")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def read_timing(timing_dir: Path, models: list[str]) -> dict[str, dict]:
    """{model: {train_seconds, tokens_per_second}} from the train stages' metrics/timing/<model>.json."""
    out = {}
    for m in models:
        rec = read_stage_json(timing_dir / f"{m}.json", f"train@{m}")
        try:
            out[m] = {k: float(rec[k]) for k in ("train_seconds", "tokens_per_second")}
        except (KeyError, TypeError, ValueError) as exc:
            raise RnnlmError(f"{timing_dir / f'{m}.json'}: lacks {exc}; rerun `dvc repro train@{m}`") from None
    return out


def results_html(df: pd.DataFrame) -> str:
    """:func:`rnnlm.results.display_table` as an HTML table. Classes: ``baseline`` on n-gram rows,
    ``best`` on the first row (the table is sorted by test perplexity), ``num`` on number columns."""
    shown = display_table(df)
    num = ["" if c in TEXT_COLUMNS else ' class="num"' for c in df.columns]

    def cells(tag: str, values) -> str:
        return "".join(f"<{tag}{n}>{html.escape(str(v))}</{tag}>" for n, v in zip(num, values))

    out = ["<table>", f"<thead><tr>{cells('th', shown.columns)}</tr></thead>", "<tbody>"]
    for r, (kind, row) in enumerate(zip(df["kind"], shown.itertuples(index=False))):
        classes = (["baseline"] if kind == "ngram" else []) + (["best"] if r == 0 else [])
        attr = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f"<tr{attr}>{cells('td', row)}</tr>")
    return "\n".join([*out, "</tbody>", "</table>"])


def _flatten(d: dict, prefix: tuple[str, ...] = ()):
    """(key path, value) of every leaf of a nested dict."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, (*prefix, str(k)))
        else:
            yield (*prefix, str(k)), v


def corpus_html(corpus: dict) -> str:
    """metrics/corpus.json as a table, one row per value: "tokens (train)", rates in per cent."""
    rows = []
    for key, v in _flatten(corpus):
        label = key[0].replace("_", " ") + (f" ({', '.join(key[1:])})" if len(key) > 1 else "")
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if isinstance(v, float):
            text = f"{v:.3%}" if any("rate" in k for k in key) else f"{v:.6g}"
        elif isinstance(v, list):
            text = ", ".join(map(str, v))
        else:
            text = f"{v:,}" if number else str(v)
        cls = ' class="num"' if number else ""
        rows.append(f"<tr><th>{html.escape(label)}</th><td{cls}>{html.escape(text)}</td></tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def headline_html(ev: dict) -> str:
    """The best model's and the best baseline's test scores, and what every row scores."""
    unit = {"char": "bits/char", "word": "bits/word"}.get(ev.get("level"), "bits/token")
    parts = []
    for group, label in (("models", "Best neural model"), ("baselines", "best baseline")):
        if entries := ev.get(group):
            name = min(entries, key=lambda n: entries[n]["test"]["perplexity"])
            test = entries[name]["test"]
            scores = f"test perplexity {test['perplexity']:.3f} ({test['bits_per_token']:.3f} {unit})"
            parts.append(f"{label}: <b>{html.escape(name)}</b>, {scores}")
    if not parts:
        return ""
    tokens = ev.get("targets", {})
    scored = (
        f" Every row scores the same {tokens['test']:,} test targets (and {tokens['val']:,} validation "
        "targets), each predicted from the tokens before it in its split."
        if "test" in tokens and "val" in tokens
        else ""
    )
    return f"<p>{'; '.join(parts)}.{html.escape(scored)}</p>"


def samples_html(samples_dir: Path, order: list[str]) -> str:
    """Each samples/<name>.txt under a heading, those of ``order`` first."""
    stage_output(samples_dir, "sample")
    files = {p.stem: p for p in samples_dir.glob("*.txt")}
    if not files:
        raise RnnlmError(f"{samples_dir}: no samples (*.txt); run `dvc repro sample` first")
    names = [m for m in order if m in files] + sorted(set(files) - set(order))
    return "\n".join(
        f"<h3>{html.escape(n)}</h3>\n<pre>{html.escape(files[n].read_text(encoding='utf-8'))}</pre>" for n in names
    )


def build_report(root: str | Path = ".") -> str:
    """The report page's HTML, from the pipeline's outputs under ``root``."""
    root = Path(root)
    corpus = read_stage_json(root / paths.CORPUS_METRICS, "vocab")
    ev = read_stage_json(root / paths.EVAL, "evaluate")
    results = read_results(stage_output(root / paths.EVAL_DIR / "results.csv", "evaluate"))
    models = list(ev.get("models") or {})
    results = with_timing(results, read_timing(root / paths.TIMING, models))
    figures = [(png_data_uri(root / rel, stage), caption) for rel, stage, caption in FIGURES]
    samples = samples_html(root / paths.SAMPLES, models)

    fig_html = "\n".join(
        f'<figure>\n<img src="{uri}" alt="{html.escape(caption)}">\n<figcaption>{html.escape(caption)}'
        "</figcaption>\n</figure>"
        for uri, caption in figures
    )
    body = f"""<h1>{html.escape(TITLE)}</h1>

<h2>Corpus</h2>
{corpus_html(corpus)}

<h2>Results</h2>
{headline_html(ev)}
{results_html(results)}
<p class="note">Perplexity is exp of the mean negative log-likelihood per token; bits per token is the
same mean in base 2. Parameter counts of the n-gram baselines are the numbers of stored counts.
Training time and throughput come from the training stages and are not comparable across devices.</p>

<h2>Figures</h2>
{fig_html}

<h2>Samples</h2>
{samples}
"""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(TITLE)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def run_report(root: str | Path = ".", out: str | Path = paths.REPORT) -> Path:
    """Write the report page to ``root / out`` atomically; return its path."""
    path = Path(root) / out
    write_text(path, build_report(root))
    return path
