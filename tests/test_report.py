"""Tests for rnnlm.report: one self-contained HTML page from the pipeline's outputs."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from rnnlm import report
from rnnlm.errors import RnnlmError
from rnnlm.fileio import write_bytes, write_json, write_text
from rnnlm.results import results_table, with_timing

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ["metrics/eval/learning_curves.png", "metrics/eval/test_perplexity.png", "metrics/vocab/zipf.png"]


_PNG_CACHE: dict[str, bytes] = {}


def _png(path: Path, label: str) -> None:
    """A small real PNG (drawn once per label, then reused: matplotlib is slow)."""
    if label not in _PNG_CACHE:
        import matplotlib.pyplot as plt

        from rnnlm.plots import save_figure

        fig, ax = plt.subplots(figsize=(1.5, 1))
        ax.set_title(label)
        save_figure(fig, path)
        _PNG_CACHE[label] = path.read_bytes()
    write_bytes(path, _PNG_CACHE[label])


def make_inputs(root: Path) -> None:
    write_json(
        root / "metrics" / "corpus.json",
        {
            "level": "char",
            "vocab_size": 28,
            "tokens": {"train": 10800, "val": 600, "test": 600},
            "oov_rate": {"val": 0.0, "test": 0.0025},
        },
    )

    def entry(p, params):
        return {
            "test": {"perplexity": p, "bits_per_token": math.log2(p)},
            "val": {"perplexity": p * 0.98},
            "params": params,
        }

    write_json(
        root / "metrics" / "eval.json",
        {
            "level": "char",
            "targets": {"val": 599, "test": 599},
            "models": {"rnn": entry(6.5, 900), "lstm": entry(5.25, 2100), "gru": entry(5.5, 1700)},
            "baselines": {"kneser-ney-3": entry(6.0, 500), "unigram": entry(17.5, 28)},
        },
    )
    rows = []
    for name, kind, p in (
        ("rnn", "rnn", 6.5),
        ("lstm", "lstm", 5.25),
        ("gru", "gru", 5.5),
        ("kneser-ney-3", "ngram", 6.0),
        ("unigram", "ngram", 17.5),
    ):
        model = kind != "ngram"
        rows.append(
            {
                "name": name,
                "kind": kind,
                "impl": "torch" if model else "count",
                "params": 100,
                "val_perplexity": p * 0.98,
                "test_perplexity": p,
                "bits_per_token": math.log2(p),
                "best_step": 2 if model else pd.NA,
            }
        )
    write_text(root / "metrics" / "eval" / "results.csv", results_table(rows, "char").to_csv(index=False))
    for i, m in enumerate(("rnn", "lstm", "gru")):  # the train stages' wall-clock records
        write_json(root / "metrics" / "timing" / f"{m}.json", {"train_seconds": 3.5 + i, "tokens_per_second": 5000.0})
    for rel in FIGURES:
        _png(root / rel, Path(rel).stem)
    for m in ("rnn", "lstm", "gru"):
        write_text(
            root / "samples" / f"{m}.txt",
            f'# {m}: strategy greedy\n\n--- prefix 1/1: "time traveller"\ntime traveller <{m}> & co\n',
        )
    write_text(root / "samples" / "samples.md", "# Samples\n")


def test_report_has_the_table_the_embedded_images_and_the_samples(tmp_path):
    make_inputs(tmp_path)
    path = report.run_report(tmp_path)
    assert path == tmp_path / "reports" / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>" in page and '<meta charset="utf-8">' in page
    # the results table, as an HTML table, in the order of results.csv (sorted by test ppl)
    assert "<th>model</th>" in page and '<th class="num">test ppl</th>' in page
    names = re.findall(r"<tr[^>]*><td>([^<]+)</td>", page)
    assert names[-5:] == ["lstm", "gru", "kneser-ney-3", "rnn", "unigram"]
    assert '<tr class="baseline"><td>unigram</td>' in page and '<tr class="best"><td>lstm</td>' in page
    assert "5.250" in page and "bits/char" in page
    # the wall times, joined in from metrics/timing/ (blank for the baselines)
    assert '<th class="num">train time (s)</th>' in page and '<td class="num">4.5</td>' in page
    assert page.count('<td class="num">5,000</td>') == 3
    # corpus summary and headline
    assert "vocab size" in page and "10,800" in page and "0.250%" in page
    assert "Best neural model: <b>lstm</b>" in page and "best baseline: <b>kneser-ney-3</b>" in page
    # every figure embedded, byte for byte
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 3
    assert [base64.b64decode(u) for u in uris] == [(tmp_path / rel).read_bytes() for rel in FIGURES]
    # the samples, HTML-escaped, in model order
    for m in ("rnn", "lstm", "gru"):
        assert f"time traveller &lt;{m}&gt; &amp; co" in page
    assert page.index("&lt;rnn&gt;") < page.index("&lt;lstm&gt;") < page.index("&lt;gru&gt;")
    # self-contained: no scripts, no network resources
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_report_is_deterministic(tmp_path):
    make_inputs(tmp_path)
    first = report.run_report(tmp_path).read_bytes()
    assert report.run_report(tmp_path).read_bytes() == first


@pytest.mark.parametrize(
    "rel,stage",
    [
        ("metrics/eval.json", "evaluate"),
        ("metrics/eval/results.csv", "evaluate"),
        ("metrics/vocab/zipf.png", "vocab"),
        ("metrics/corpus.json", "vocab"),
        ("metrics/eval/test_perplexity.png", "evaluate"),
        ("metrics/timing/lstm.json", "train@lstm"),
    ],
)
def test_a_missing_input_names_the_file_and_the_stage(tmp_path, rel, stage):
    make_inputs(tmp_path)
    (tmp_path / rel).unlink()
    with pytest.raises(RnnlmError, match=re.escape(rel) + f".*dvc repro {stage}"):
        report.run_report(tmp_path)
    assert not (tmp_path / "reports" / "report.html").exists()


def test_no_samples_is_an_error_naming_the_sample_stage(tmp_path):
    make_inputs(tmp_path)
    for p in (tmp_path / "samples").glob("*.txt"):
        p.unlink()
    with pytest.raises(RnnlmError, match="dvc repro sample"):
        report.run_report(tmp_path)


def test_a_figure_that_is_not_a_png_is_refused(tmp_path):
    make_inputs(tmp_path)
    (tmp_path / FIGURES[0]).write_bytes(b"GIF89a...")
    with pytest.raises(RnnlmError, match="not a PNG"):
        report.run_report(tmp_path)


def test_results_html_alignment_classes_escaping_and_missing_values():
    rows = [
        {
            "name": "a<b",
            "kind": "ngram",
            "impl": "count",
            "params": 1234,
            "val_perplexity": 1.5,
            "test_perplexity": 1.5,
            "bits_per_token": 0.5,
            "best_step": pd.NA,
        },
        {
            "name": "c",
            "kind": "rnn",
            "impl": "torch",
            "params": 5,
            "val_perplexity": 2.0,
            "test_perplexity": 2.0,
            "bits_per_token": 1.0,
            "best_step": 7,
        },
    ]
    out = report.results_html(
        with_timing(results_table(rows, "word"), {"c": {"train_seconds": 3.25, "tokens_per_second": 10.0}})
    )
    assert '<th class="num">test ppl</th>' in out and "<th>model</th>" in out and "bits/word" in out
    assert '<tr class="baseline best"><td>a&lt;b</td>' in out and '<td class="num">1,234</td>' in out
    assert '<td class="num">7</td>' in out and '<td class="num">–</td>' in out  # best step; none for an n-gram
    assert '<td class="num">3.2</td>' in out and '<td class="num">10</td>' in out  # the wall times


def test_results_csv_reads_back_as_written(tmp_path):
    make_inputs(tmp_path)
    from rnnlm.results import read_results

    df = read_results(tmp_path / "metrics" / "eval" / "results.csv")
    assert str(df["params"].dtype) == "int64" and str(df["best_step"].dtype) == "Int64"
    assert df["best_step"].isna().tolist() == [False, False, True, False, True]


def test_another_stages_missing_or_unreadable_output_names_the_stage_to_run(tmp_path):
    """fileio.stage_output / read_stage_json, which report and evaluate read each other's outputs with."""
    from rnnlm.fileio import read_stage_json

    with pytest.raises(RnnlmError, match=r"^.*metrics/corpus\.json: not found; run `dvc repro vocab` first$"):
        report.build_report(tmp_path)
    path = tmp_path / "eval.json"
    for bad in (b'{"models": ', b"\xff\xfe{}"):  # truncated JSON, not UTF-8
        path.write_bytes(bad)
        with pytest.raises(RnnlmError, match=r"eval\.json: not valid JSON \(.*\); rerun `dvc repro evaluate`$"):
            read_stage_json(path, "evaluate")
    write_json(path, {"level": "char"})
    assert read_stage_json(path, "evaluate") == {"level": "char"}
