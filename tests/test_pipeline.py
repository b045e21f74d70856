"""The pipeline under real `dvc repro` in a temporary git repository (integration)."""
import json

import numpy as np
import pytest

from conftest import make_project, ran_stages

pytestmark = pytest.mark.integration

ALL_STAGES = ["download", "clean", "vocab", "train-rnn", "train-lstm", "train-gru", "evaluate", "sample", "report"]


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
    for m in ("rnn", "lstm", "gru"):
        assert (p / f"models/{m}.pt").stat().st_size > 0
        summary = json.loads((p / f"metrics/train/{m}/metrics.json").read_text())
        assert summary["step"] >= 2 and summary["val"]["perplexity"] > 1
    ev = json.loads((p / "metrics/eval.json").read_text())
    for m in ("rnn", "lstm", "gru"):
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


def test_changing_min_freq_reruns_only_vocab(built):
    proj, _ = built
    proj.set_params({"vocab": {"min_freq": 2}})  # every letter is frequent: same vocabulary
    out = proj.repro()
    assert ran_stages(out.stdout) == ["vocab"]
    proj.commit("min_freq 2")


def test_changing_one_model_reruns_only_its_training_and_downstream(built):
    proj, _ = built
    proj.set_params({"lstm": {"hidden": 12}})
    out = proj.repro()
    assert sorted(ran_stages(out.stdout)) == sorted(["train-lstm", "evaluate", "sample", "report"])
    proj.commit("lstm hidden 12")
