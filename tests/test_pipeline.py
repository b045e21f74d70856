"""The pipeline under real `dvc repro` in a temporary git repository (integration)."""

import csv
import json

import numpy as np
import pytest
from conftest import ALL_STAGES, make_project, ran_stages

from rnnlm.checkpoint import load_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("pipeline") / "proj")
    first = proj.repro()
    return proj, first


def test_full_pipeline_runs_every_stage_and_writes_outputs(built):
    proj, first = built
    assert sorted(ran_stages(first.stdout)) == sorted(ALL_STAGES)
    p = proj.path
    vocab = json.loads((p / "data/vocab.json").read_text())
    assert vocab["tokens"][0] == "<unk>" and vocab["size"] == 28  # 26 letters, space, <unk>
    source = json.loads((p / "data/raw/source.json").read_text())
    assert source["corpus"] == "timemachine" and source["kind"] == "mirror"
    splits = {s: np.load(p / f"data/tokens/{s}.npy") for s in ("train", "val", "test")}
    assert sum(len(a) for a in splits.values()) == 12000
    for m in ("rnn", "lstm", "gru", "transformer"):
        assert (p / f"models/{m}.pt").stat().st_size > 0
        summary = json.loads((p / f"metrics/train/{m}/metrics.json").read_text())
        assert summary["step"] >= 2 and summary["val"]["perplexity"] > 1
    ev = json.loads((p / "metrics/eval.json").read_text())
    for m in ("rnn", "lstm", "gru", "transformer"):
        assert ev["models"][m]["test"]["perplexity"] > 1
    assert (p / "samples/samples.md").read_text().count("time traveller") >= 3
    assert (p / "metrics/eval/learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (p / "reports/report.html").exists()
    shown = proj.dvc("metrics", "show").stdout
    assert "metrics/eval.json" in shown and "lstm" in shown


def test_second_repro_runs_nothing(built):
    proj, _ = built
    proj.commit("after first repro")
    again = proj.repro()
    assert ran_stages(again.stdout) == []
    assert "up to date" in proj.dvc("status").stdout


def test_an_identical_retrain_reruns_only_the_report(built):
    """Retraining gives the same model, metrics and curves; only the wall times differ, and they
    live in metrics/timing/, which only the report reads: evaluate and sample stay up to date."""
    proj, _ = built
    timing = proj.path / "metrics/timing/rnn.json"
    before = json.loads(timing.read_text())
    forced = proj.repro("-f", "-s", "train@rnn")
    assert ran_stages(forced.stdout) == ["train@rnn"]
    assert set(json.loads(timing.read_text())) == set(before)
    out = proj.repro()
    assert ran_stages(out.stdout) == ["report"]
    proj.commit("identical retrain")


def test_changing_min_freq_reruns_only_vocab(built):
    proj, _ = built
    proj.set_params({"vocab": {"min_freq": 2}})  # every letter is frequent: same vocabulary
    out = proj.repro()
    assert ran_stages(out.stdout) == ["check-params", "vocab"]
    proj.commit("min_freq 2")


def test_changing_one_model_reruns_only_its_training_and_downstream(built):
    proj, _ = built
    proj.set_params({"lstm": {"hidden": 12}})
    out = proj.repro()
    assert sorted(ran_stages(out.stdout)) == sorted(["check-params", "train@lstm", "evaluate", "sample", "report"])
    proj.commit("lstm hidden 12")


def test_a_second_section_of_one_cell_trains_and_is_scored_beside_the_others(built):
    """Model sections name their cell: a section `lstm_big` (lstm's keys, another hidden size)
    listed in `models` trains as train@lstm_big with no code change, and nothing else retrains."""
    proj, _ = built
    big = {**proj.params()["lstm"], "cell": "lstm", "hidden": 20}
    proj.set_params({"models": ["rnn", "lstm", "gru", "transformer", "lstm_big"], "lstm_big": big})
    out = proj.repro()
    assert sorted(ran_stages(out.stdout)) == sorted(["check-params", "train@lstm_big", "evaluate", "sample", "report"])
    p = proj.path
    card = load_checkpoint(p / "models/lstm_big.pt")
    assert (
        card["name"] == "lstm_big" and card["model_config"]["cell"] == "lstm" and card["model_config"]["hidden"] == 20
    )
    lstm = load_checkpoint(p / "models/lstm.pt")["model_config"]
    assert {k: v for k, v in card["model_config"].items() if k != "hidden"} == {
        k: v for k, v in lstm.items() if k != "hidden"
    }
    scores = json.loads((p / "metrics/eval.json").read_text())["models"]
    assert set(scores) == {"rnn", "lstm", "gru", "transformer", "lstm_big"}
    assert scores["lstm_big"]["test"]["perplexity"] > 1
    rows = {r["name"]: r for r in csv.DictReader(open(p / "metrics/eval/results.csv", encoding="utf-8"))}
    assert rows["lstm_big"]["kind"] == "lstm" and (p / "samples/lstm_big.txt").exists()
    assert (p / "metrics/train/lstm_big/metrics.json").exists()
    proj.commit("lstm_big")


def test_a_comment_edit_reruns_only_code_and_a_real_edit_only_its_stages(built):
    """Stages depend on data/code/<script>.sha256 (the syntax trees of the code they import), not
    on source files: a comment or docstring edit of rnnlm/models.py reruns no training; a change to
    what the report stage runs reruns the report alone."""
    proj, p = built[0], built[0].path
    models = p / "rnnlm/models.py"
    models.write_text(
        models.read_text().replace('"""Recurrent language models', '"""Recurrent language models (a docstring edit)', 1)
        + "\n# a comment at the end\n"
    )
    out = proj.repro()
    assert ran_stages(out.stdout) == ["code"]
    proj.commit("comment edit")
    report = p / "rnnlm/report.py"
    report.write_text(report.read_text().replace('TITLE = "', 'TITLE = "Edited: ', 1))
    out = proj.repro()
    assert ran_stages(out.stdout) == ["code", "report"]
    assert "Edited: " in (p / "reports/report.html").read_text(encoding="utf-8")
    proj.commit("report title")


def test_presplit_word_level_corpus_through_dvc_repro(tmp_path):
    """A corpus given as three files (the first lines of the Penn Treebank mirror), tokenized the
    word_language_model way, through real `dvc repro`: every stage runs, the split files are kept
    as they are (no fractional split), and the tables name the unit."""
    from conftest import SHARED_DATA

    corpus = {s: f"data/corpora/ptb-head/{s}.txt" for s in ("train", "val", "test")}  # local files live there
    model = {"hidden": 16, "embedding": 16, "dropout": 0.0}
    proj = make_project(
        tmp_path / "proj",
        {
            "download": {"corpus": corpus},
            "clean": {"mode": "raw", "max_chars": 0},
            "vocab": {"level": "word", "tokenizer": "whitespace", "eos": True},
            "lstm": {**model, "softmax": "adaptive", "cutoffs": [50]},
            "rnn": {**model, "tie_weights": True},
            "gru": model,
            "train": {"max_steps": 30, "eval_every": 10, "epochs": 50},
            "sample": {"prefixes": ["the company"]},
        },
    )
    src = proj.path / "data" / "corpora" / "ptb-head"
    src.mkdir()
    for split, name, lines in (("train", "train", 400), ("val", "valid", 60), ("test", "test", 60)):
        text = (SHARED_DATA / f"ptb.{name}.txt").read_text().splitlines(keepends=True)[:lines]
        (src / f"{split}.txt").write_text("".join(text))
    out = proj.repro()
    assert sorted(ran_stages(out.stdout)) == sorted(ALL_STAGES)
    p = proj.path
    corpus_stats = json.loads((p / "metrics/corpus.json").read_text())
    expected = {
        s: sum(len(line.split()) + 1 for line in (src / f"{s}.txt").read_text().splitlines())
        for s in ("train", "val", "test")
    }
    assert corpus_stats["tokens"] == expected and corpus_stats["presplit"] is True
    vocab = json.loads((p / "data/vocab.json").read_text())
    assert vocab["tokenizer"] == "whitespace" and "<eos>" in vocab["tokens"] and "<" not in vocab["tokens"]
    assert sorted(f.name for f in (p / "data/clean").iterdir()) == ["source.json", "test.txt", "train.txt", "val.txt"]
    summary = json.loads((p / "metrics/train/lstm/metrics.json").read_text())
    assert summary["step"] == 30 and summary["stopped_by"] == "max_steps"
    ev = json.loads((p / "metrics/eval.json").read_text())
    assert ev["level"] == "word" and ev["targets"] == {"val": expected["val"] - 1, "test": expected["test"] - 1}
    assert "word" in (p / "metrics/eval/results.md").read_text()
    assert "the company" in (p / "samples/samples.md").read_text()
