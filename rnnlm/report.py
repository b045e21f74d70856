"""The report stage's work: one self-contained HTML page, ``reports/report.html``.

It shows the corpus summary (metrics/corpus.json), the headline numbers (metrics/eval.json), the
results table (metrics/eval/results.csv, read with pandas), the figures (learning
curves, test perplexity, Zipf plot) embedded as base64 ``data:`` URIs, and the samples
(samples/<model>.txt, HTML-escaped). Plain HTML and inline CSS: no JavaScript, no network
resources, no timestamps (the same inputs give the same bytes).

This module reads only files, so it imports nothing from the rest of the package beyond the
file and error helpers and the results table (the stage's DVC deps list exactly those).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from .errors import RnnlmError
from .fileio import read_stage_json, stage_output, write_text
from .results import TEXT_COLUMNS, display_table, read_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TITLE = "Recurrent language models: results"

FIGURES = (  # (path, producing stage, caption)
    (
        "metrics/eval/learning_curves.png",
        "evaluate",
        "Learning curves: training (dashed) and validation (solid) perplexity by optimizer step.",
    ),
    (
        "metrics/eval/test_perplexity.png",
        "evaluate",
        "Test perplexity of every model, model + Kneser-Ney mixture (dotted) and baseline (hatched grey).",
    ),
    ("metrics/vocab/zipf.png", "vocab", "Zipf plot of the train split's token frequencies."),
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


# --- inputs ---------------------------------------------------------------------------------
def png_data_uri(path: Path, stage: str) -> str:
    data = stage_output(path, stage).read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise RnnlmError(f"{path}: not a PNG image; rerun `dvc repro {stage}`")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# --- pieces ---------------------------------------------------------------------------------
def results_html(df: pd.DataFrame) -> str:
    """The results table (:func:`rnnlm.results.display_table` of results.csv) as an HTML table.

    Rows whose ``kind`` is ``ngram`` get class ``baseline``; the first row (the table is sorted by
    test perplexity) class ``best``; number columns class ``num`` (right-aligned).
    """
    shown = display_table(df)
    num = ["" if c in TEXT_COLUMNS else ' class="num"' for c in df.columns]
    out = [
        "<table>",
        "<thead><tr>" + "".join(f"<th{n}>{html.escape(h)}</th>" for n, h in zip(num, shown.columns)) + "</tr></thead>",
        "<tbody>",
    ]
    for r, (kind, row) in enumerate(zip(df["kind"], shown.itertuples(index=False))):
        classes = (["baseline"] if kind == "ngram" else []) + (["best"] if r == 0 else [])
        attr = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f"<tr{attr}>" + "".join(f"<td{n}>{html.escape(str(v))}</td>" for n, v in zip(num, row)) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _flatten(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, prefix + (str(k),))
        else:
            yield prefix + (str(k),), v


def _fmt_value(key: tuple[str, ...], v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.3%}" if any("rate" in k for k in key) else f"{v:.6g}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def corpus_html(corpus: dict) -> str:
    rows = []
    for key, v in _flatten(corpus):
        label = key[0].replace("_", " ") + (f" ({', '.join(key[1:])})" if len(key) > 1 else "")
        cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        rows.append(f"<tr><th>{html.escape(label)}</th><td{cls}>{html.escape(_fmt_value(key, v))}</td></tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def headline_html(ev: dict) -> str:
    unit = "bits/char" if ev.get("level") == "char" else "bits/word" if ev.get("level") == "word" else "bits/token"
    parts = []
    for group, label in (("models", "Best recurrent model"), ("baselines", "best baseline")):
        entries = ev.get(group) or {}
        if not entries:
            continue
        name = min(entries, key=lambda n: entries[n]["test"]["perplexity"])
        test = entries[name]["test"]
        parts.append(
            f"{label}: <b>{html.escape(name)}</b>, test perplexity {test['perplexity']:.3f} "
            f"({test['bits_per_token']:.3f} {unit})"
        )
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
    stage_output(samples_dir, "sample")
    files = {p.stem: p for p in samples_dir.glob("*.txt")}
    if not files:
        raise RnnlmError(f"{samples_dir}: no samples (*.txt); run `dvc repro sample` first")
    names = [m for m in order if m in files] + sorted(set(files) - set(order))
    out = []
    for name in names:
        text = files[name].read_text(encoding="utf-8")
        out.append(f"<h3>{html.escape(name)}</h3>\n<pre>{html.escape(text)}</pre>")
    return "\n".join(out)


# --- the page ------------------------------------------------------------------------------
def build_report(root: str | Path = ".") -> str:
    """The report page's HTML, from the pipeline's outputs under ``root``."""
    root = Path(root)
    corpus = read_stage_json(root / "metrics" / "corpus.json", "vocab")
    ev = read_stage_json(root / "metrics" / "eval.json", "evaluate")
    results = read_results(stage_output(root / "metrics" / "eval" / "results.csv", "evaluate"))
    figures = [(png_data_uri(root / rel, stage), caption) for rel, stage, caption in FIGURES]
    samples = samples_html(root / "samples", list(ev.get("models") or {}))

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


def run_report(root: str | Path = ".", out: str | Path = "reports/report.html") -> Path:
    """Write the report page to ``root / out`` atomically; return its path."""
    root = Path(root)
    path = root / out
    write_text(path, build_report(root))
    return path
