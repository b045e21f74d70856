"""Tests for rnnlm.evaluate and stages/evaluate.py: exact scores, baselines, outputs, errors."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import config, deep_update, run_stage_script, save_model_file, tiny_model
from ngram_helpers import log_prob, prob

from rnnlm import evaluate as ev
from rnnlm.errors import ParamError, RnnlmError
from rnnlm.fileio import write_json, write_text
from rnnlm.metrics import model_nll
from rnnlm.models import RNNLM, num_parameters
from rnnlm.ngram import KneserNeyLM
from rnnlm.params import MODELS
from rnnlm.report import read_timing
from rnnlm.results import read_results, with_timing
from rnnlm.vocab import build, write_outputs

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXT = (
    "the time traveller for so it will be convenient to speak of him was expounding a recondite "
    "matter to us his grey eyes shone and twinkled and his usually pale face was flushed and animated "
) * 6
CFG = config("evaluate", {"ngram_order": 3, "batch_size": 4, "device": "cpu"})


# --- helpers (a tiny trained-looking project in a directory) ---------------------------------
def fixed_distribution_model(probs, cell="rnn") -> RNNLM:
    """A model whose prediction is ``probs`` whatever the input: decoder weights 0, bias log p."""
    probs = torch.tensor(probs, dtype=torch.float64)
    model = RNNLM(cell, "torch", len(probs), hidden=3, layers=1, dropout=0.0, embedding=2).double()
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.log(probs))
    return model


def make_project(root: Path, models=MODELS, level: str = "char", text: str = TEXT, epochs: int = 3):
    """data/vocab.json, data/tokens, metrics/corpus.json + zipf.png, models/<m>.pt and fake training
    metrics (as the train stage writes them) for ``models``. Returns the vocabulary."""
    vocab, encoded, stats, _ = build(text, config("vocab", {"level": level, "split": [0.8, 0.1, 0.1]}))
    write_outputs(vocab, encoded, stats, root)
    for i, m in enumerate(models):
        torch.manual_seed(i)
        model = tiny_model(m, len(vocab))
        # the lstm as trained with precision bf16; the others without the key (files from before it existed)
        bf16 = {"precision": "bf16"} if m == "lstm" else {}
        save_model_file(root / "models" / f"{m}.pt", model, vocab, m, epochs, 10.0 + i, **bf16)
        live = root / "metrics" / "train" / m
        val = [20.0 / (e + 1) + i for e in range(epochs)]
        train = [25.0 / (e + 1) + i for e in range(epochs)]
        write_json(
            live / "metrics.json",
            {
                "train": {"perplexity": train[-1]},
                "val": {"perplexity": val[-1]},
                "lr": 0.01,
                "step": epochs,
                "best": {"val_perplexity": val[-2], "step": epochs - 1, "epoch": float(epochs - 1)},
                "params": num_parameters(model),
                "epochs_run": epochs,
                "stopped_early": False,
            },
        )
        write_json(
            root / "metrics" / "timing" / f"{m}.json",
            {"train_seconds": 12.5 + i, "tokens": 1000, "tokens_per_second": 80.0 + i, "device": "cpu", "threads": 1},
        )
        for split, values in (("train", train), ("val", val)):
            rows = "".join(f"{e + 1}\t{v}\n" for e, v in enumerate(values))
            write_text(live / "plots" / "metrics" / split / "perplexity.tsv", "step\tperplexity\n" + rows)
    return vocab


# --- exact scores ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch_size,num_steps", [(1, 64), (3, 2), (16, 1)])
def test_model_nll_of_a_fixed_distribution_matches_the_hand_sum(cell, batch_size, num_steps):
    p = [0.1, 0.2, 0.3, 0.4]
    model = fixed_distribution_model(p, cell)
    tokens = np.array([0, 1, 2, 3, 3, 1, 2, 3, 0, 3], dtype=np.int64)
    targets = tokens[1:]  # the first token is context only
    hand = -sum(math.log(p[t]) for t in targets)
    nll, n = model_nll(model, tokens, batch_size, num_steps)
    assert n == len(targets) == 9
    assert nll == pytest.approx(hand, rel=1e-12)
    scores = ev.split_scores(nll, n)
    assert scores["perplexity"] == pytest.approx(math.exp(hand / 9), rel=1e-12)
    assert scores["bits_per_token"] == pytest.approx(hand / 9 / math.log(2), rel=1e-12)


def test_score_model_scores_val_and_test_exactly():
    p = [0.5, 0.25, 0.125, 0.125]
    model = fixed_distribution_model(p)
    splits = {"train": np.array([0, 1]), "val": np.array([1, 0, 0, 0, 1]), "test": np.array([3, 2, 2, 1])}
    out = ev.score_model(model, splits, batch_size=2)
    # val targets 0,0,0,1: -log p = 3 ln 2 + 2 ln 2 = 5 ln 2 over 4 targets -> 1.25 bits
    assert out["val"]["tokens"] == 4 and out["val"]["bits_per_token"] == pytest.approx(1.25)
    assert out["val"]["perplexity"] == pytest.approx(2**1.25)
    # test targets 2,2,1: 3 + 3 + 2 bits over 3 targets
    assert out["test"]["bits_per_token"] == pytest.approx(8 / 3)
    assert out["test"]["perplexity"] == pytest.approx(2 ** (8 / 3))


def test_a_split_too_short_to_score_is_a_param_error():
    with pytest.raises(ParamError, match="vocab.split"):
        ev._check_splits({"train": np.arange(5), "val": np.array([1]), "test": np.arange(3)})
    with pytest.raises(RnnlmError):
        ev.split_scores(0.0, 0)


# --- baselines -------------------------------------------------------------------------------
TOY_TRAIN = np.array([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 2, 0, 1, 2, 3, 3, 0, 4, 1, 2], dtype=np.int64)
TOY = {"train": TOY_TRAIN, "val": np.array([1, 2, 0, 1, 2, 5]), "test": np.array([4, 1, 2, 3, 0, 1, 2])}
V_TOY = 6


def test_unigram_baseline_row_matches_add_one_by_hand():
    models = ev.fit_baselines(TOY["train"], V_TOY, order=3)
    assert list(models) == ["kneser-ney-3", "unigram"]
    uni, desc = models["unigram"]
    assert desc["params"] == V_TOY
    counts = np.bincount(TOY_TRAIN, minlength=V_TOY)
    p = (counts + 1) / (len(TOY_TRAIN) + V_TOY)
    scores = ev.score_lm(uni, TOY)
    for split in ("val", "test"):
        targets = TOY[split][1:]
        hand = -np.log(p[targets]).sum()
        assert scores[split]["tokens"] == len(targets)
        assert scores[split]["perplexity"] == pytest.approx(math.exp(hand / len(targets)), rel=1e-12)
        assert scores[split]["bits_per_token"] == pytest.approx(hand / len(targets) / math.log(2), rel=1e-12)


def test_kneser_ney_baseline_scores_the_same_targets_with_the_preceding_context():
    kn, desc = ev.fit_baselines(TOY["train"], V_TOY, order=3)["kneser-ney-3"]
    assert isinstance(kn, KneserNeyLM) and kn.order == 3
    assert desc["params"] == sum(len(c) for c in kn.counts) + 3
    scores = ev.score_lm(kn, TOY)
    for split in ("val", "test"):
        s = TOY[split]
        # token i given (up to 2 of) the tokens before it in the split, for i >= 1
        hand = -sum(math.log(prob(kn, s[max(0, i - 2) : i], int(s[i]))) for i in range(1, len(s)))
        assert scores[split]["tokens"] == len(s) - 1
        assert scores[split]["perplexity"] == pytest.approx(math.exp(hand / (len(s) - 1)), rel=1e-12)
    # a model and the baselines count the same targets
    model = fixed_distribution_model([1 / V_TOY] * V_TOY)
    m = ev.score_model(model, TOY, batch_size=2)
    assert {s: m[s]["tokens"] for s in ("val", "test")} == {s: scores[s]["tokens"] for s in ("val", "test")}
    assert m["test"]["perplexity"] == pytest.approx(V_TOY)  # uniform model


# --- tables -----------------------------------------------------------------------------------
def _rows():
    base = {"impl": "torch", "train_perplexity": 4.5, "best_step": 2}
    return [
        {
            "name": "lstm",
            "kind": "lstm",
            "params": 1000,
            "val_perplexity": 5.0,
            "test_perplexity": 5.5,
            "bits_per_token": 2.46,
            **base,
        },
        {
            "name": "unigram",
            "kind": "ngram",
            "impl": "add-1 smoothing",
            "params": 30,
            "val_perplexity": 20.0,
            "test_perplexity": 21.0,
            "bits_per_token": 4.39,
            "train_perplexity": math.nan,
            "best_step": pd.NA,
        },
        {
            "name": "gru",
            "kind": "gru",
            "params": 2000,
            "val_perplexity": 4.0,
            "test_perplexity": 4.1234567,
            "bits_per_token": 2.04,
            **base,
        },
    ]


@pytest.mark.parametrize(
    "level,column,header", [("char", "bits_per_char", "bits/char"), ("word", "bits_per_word", "bits/word")]
)
def test_results_table_sorted_by_test_perplexity_with_level_named_bits(level, column, header):
    df = ev.results_table(_rows(), level)
    assert list(df["name"]) == ["gru", "lstm", "unigram"]
    assert column in df.columns and "bits_per_token" not in df.columns
    md = ev.markdown_table(df)
    lines = md.strip().splitlines()
    assert header in lines[0] and "test ppl" in lines[0] and "best step" in lines[0] and "| unit " in lines[0]
    assert all(f"| {level} " in line for line in lines[2:])  # every row names the token unit
    assert len(lines) == 2 + 3
    assert "4.123 " in lines[2] and "4.1234567" not in md  # rounded
    assert "2,000" in lines[2] and "train time" not in md  # no wall times in results.md
    assert "–" in lines[4] and "nan" not in md.lower()
    # the report's table: the train stages' wall times joined in, blank for the baseline
    timed = ev.markdown_table(
        with_timing(df, {m: {"train_seconds": 1.25, "tokens_per_second": 1234.5} for m in ("gru", "lstm")})
    )
    lines = timed.strip().splitlines()
    assert "train time (s)" in lines[0] and "tokens/s" in lines[0] and "1,234" in lines[2] and "1.2 " in lines[2]
    assert lines[4].count("–") == 4 and "nan" not in timed.lower()


# --- the stage's work end to end --------------------------------------------------------------
def test_run_evaluate_writes_every_output(tmp_path):
    vocab = make_project(tmp_path)
    logs = []
    result = ev.run_evaluate(CFG, tmp_path, log=logs.append)
    out = tmp_path / "metrics"
    data = json.loads((out / "eval.json").read_text())
    assert data == result["eval"]
    assert set(data["models"]) == set(MODELS)
    assert set(data["baselines"]) == {"kneser-ney-3", "unigram"}
    assert set(data["interpolated"]) == {f"{m}+kneser-ney-3" for m in MODELS}
    assert set(data["cache"]) == {f"{m}+cache" for m in MODELS}
    for name, entry in data["cache"].items():  # fitted on val: never worse there than the model alone
        assert set(entry) == {"test", "val", "params", "window", "theta", "weight"} and 0 <= entry["weight"] <= 1
        assert entry["val"]["perplexity"] <= data["models"][name.split("+")[0]]["val"]["perplexity"] + 1e-6
    assert set(data["dynamic"]) == {f"{m}+dynamic" for m in MODELS}
    for entry in data["dynamic"].values():
        assert set(entry) == {"test", "val", "params", "eta", "decay"} and entry["test"]["perplexity"] > 1
    for name, entry in data["interpolated"].items():
        assert 0 <= entry["weight"] <= 1
        model = data["models"][name.split("+")[0]]
        # the maximum-likelihood mixture is never worse on val (where it was fitted) than either part
        assert (
            entry["val"]["perplexity"]
            <= min(model["val"]["perplexity"], data["baselines"]["kneser-ney-3"]["val"]["perplexity"]) + 1e-6
        )
    for entry in list(data["models"].values()) + list(data["baselines"].values()):
        assert set(entry) == {"test", "val", "params"}
        assert set(entry["test"]) == {"perplexity", "bits_per_token"}
        assert 1 < entry["test"]["perplexity"] < 2 * len(vocab)
        assert entry["test"]["bits_per_token"] == pytest.approx(math.log2(entry["test"]["perplexity"]), abs=1e-5)
    assert "seconds" not in json.dumps(data)  # no timings in the DVC metrics
    assert data["baselines"]["unigram"]["params"] == len(vocab)

    csv = pd.read_csv(out / "eval" / "results.csv")
    assert list(csv.columns) == [
        "name",
        "kind",
        "impl",
        "unit",
        "params",
        "train_perplexity",
        "val_perplexity",
        "test_perplexity",
        "bits_per_char",
        "best_step",
    ]
    mixtures = [f"{m}+{kind}" for m in MODELS for kind in ("kneser-ney-3", "cache", "dynamic")]
    assert sorted(csv["name"]) == sorted([*MODELS, *mixtures, "kneser-ney-3", "unigram"])
    assert set(csv["unit"]) == {"char"}
    assert list(csv["test_perplexity"]) == sorted(csv["test_perplexity"])
    rows = csv.set_index("name")
    timed = with_timing(read_results(out / "eval" / "results.csv"), read_timing(out / "timing", list(MODELS)))
    timed = timed.set_index("name")
    assert timed.loc["gru", "train_seconds"] == 14.5 and timed.loc["rnn", "tokens_per_second"] == 80.0
    assert pd.isna(timed.loc["unigram", "train_seconds"]) and pd.isna(
        timed.loc["gru+kneser-ney-3", "tokens_per_second"]
    )
    assert rows.loc["lstm", "best_step"] == 2 and rows.loc["lstm", "kind"] == "lstm"
    assert (
        rows.loc["lstm+kneser-ney-3", "kind"] == "interpolated" and "x lstm + " in rows.loc["lstm+kneser-ney-3", "impl"]
    )
    assert rows.loc["lstm", "impl"] == "torch (bf16)" and rows.loc["rnn", "impl"] == "torch"
    # train perplexity of the best epoch (2 of 3): the fake curve's value 25 / 2 + 1 for lstm (i = 1)
    assert rows.loc["lstm", "train_perplexity"] == pytest.approx(25.0 / 2 + 1)
    assert pd.isna(rows.loc["unigram", "train_perplexity"])
    assert rows.loc["lstm", "params"] == data["models"]["lstm"]["params"]
    assert rows.loc["unigram", "kind"] == "ngram" and pd.isna(rows.loc["unigram", "best_step"])
    assert rows.loc["rnn", "test_perplexity"] == pytest.approx(data["models"]["rnn"]["test"]["perplexity"])

    md = (out / "eval" / "results.md").read_text()
    assert md == result["markdown"] and "bits/char" in md and md.count("\n") == 2 + 18
    for png in ("learning_curves.png", "test_perplexity.png"):
        assert (out / "eval" / png).read_bytes()[:8] == PNG_MAGIC
    assert any("kneser-ney-3" in line for line in logs)

    # deterministic: a second run writes the same metrics and table
    before = {p: (out / p).read_bytes() for p in ("eval.json", "eval/results.csv", "eval/results.md")}
    ev.run_evaluate(CFG, tmp_path, log=lambda s: None)
    assert {p: (out / p).read_bytes() for p in before} == before


def test_missing_checkpoint_names_the_file_and_the_stage(tmp_path):
    make_project(tmp_path)
    (tmp_path / "models" / "lstm.pt").unlink()
    with pytest.raises(RnnlmError, match=r"models/lstm\.pt.*train@lstm"):
        ev.run_evaluate(CFG, tmp_path, log=lambda s: None)
    assert not (tmp_path / "metrics" / "eval.json").exists()


def test_missing_training_metrics_name_the_file(tmp_path):
    make_project(tmp_path, models=("gru",))
    (tmp_path / "metrics" / "train" / "gru" / "metrics.json").unlink()
    with pytest.raises(RnnlmError, match=r"metrics\.json.*train@gru"):
        ev.run_evaluate(CFG, tmp_path, models=("gru",), log=lambda s: None)
    (tmp_path / "metrics" / "timing" / "gru.json").unlink()  # the report's input
    with pytest.raises(RnnlmError, match=r"timing/gru\.json.*train@gru"):
        read_timing(tmp_path / "metrics" / "timing", ["gru"])
    write_json(tmp_path / "metrics" / "timing" / "gru.json", {"train_seconds": 1.0})
    with pytest.raises(RnnlmError, match=r"timing/gru\.json: lacks 'tokens_per_second'; rerun `dvc repro train@gru`"):
        read_timing(tmp_path / "metrics" / "timing", ["gru"])


def test_checkpoint_of_another_vocabulary_is_refused(tmp_path):
    make_project(tmp_path, models=("rnn",))
    other = tmp_path / "other"
    make_project(other, models=("rnn",), text=TEXT.upper())
    (tmp_path / "models" / "rnn.pt").write_bytes((other / "models" / "rnn.pt").read_bytes())
    with pytest.raises(RnnlmError, match="different vocabulary"):
        ev.run_evaluate(CFG, tmp_path, models=("rnn",), log=lambda s: None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_evaluate_device():
    with pytest.raises(ParamError, match="evaluate.device"):
        ev.resolve_device("cuda", "evaluate.device")
    assert ev.resolve_device("auto", "evaluate.device").type == "cpu"


# --- the stage scripts, as `dvc repro` runs them ----------------------------------------------
def _run_stage(root: Path, name: str) -> subprocess.CompletedProcess:
    return run_stage_script(name, root, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


@pytest.mark.integration  # four interpreter start-ups: a few seconds each
def test_stage_scripts_run_from_a_project_root(tmp_path):
    make_project(tmp_path)
    params = deep_update(
        yaml.safe_load((ROOT / "params.yaml").read_text()),
        {
            "download": {"corpus": "timemachine"},
            "evaluate": dataclasses.asdict(CFG),
            "sample": {"length": 12, "strategy": "top_k", "device": "cpu"},
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("evaluate", "sample", "report"):
        proc = _run_stage(tmp_path, stage)
        assert proc.returncode == 0, f"{stage}: {proc.stdout}\n{proc.stderr}"
        if stage == "evaluate":
            assert "| model" in proc.stdout and "kneser-ney-3" in proc.stdout  # the table is printed
    assert (tmp_path / "samples" / "samples.md").read_text().count("time traveller") >= 3
    page = (tmp_path / "reports" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "kneser-ney-3" in page

    (tmp_path / "models" / "gru.pt").unlink()
    proc = _run_stage(tmp_path, "evaluate")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "models/gru.pt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_stream_is_exact_and_independent_of_num_steps():
    """batch_size=1 scores every token with its full context: the same NLL as one forward pass
    over the whole split, whatever the chunk length; more streams lose context at their starts."""
    from rnnlm.metrics import model_nll
    from rnnlm.models import RNNLM

    torch.manual_seed(0)
    model = RNNLM("lstm", "torch", 7, hidden=8, layers=2, dropout=0.0, embedding=4).double().eval()
    tokens = np.random.default_rng(1).integers(0, 7, 200)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(tokens[None, :-1]))
        full = float(torch.nn.functional.cross_entropy(logits[0], torch.from_numpy(tokens[1:]), reduction="sum"))
    for num_steps in (1, 7, 64, 500):
        nll, n = model_nll(model, tokens, 1, num_steps)
        assert n == 199 and nll == pytest.approx(full, rel=1e-10)
    nll4, n4 = model_nll(model, tokens, 4, 64)
    assert n4 == 199 and nll4 != pytest.approx(full, rel=1e-10)


def test_per_token_scores_sum_to_the_totals_and_the_mixture_weight_is_the_likelihood_maximum():
    from rnnlm.metrics import mixture_log_probs, mixture_weight, model_nll, model_token_nll
    from rnnlm.ngram import KneserNeyLM

    tokens = np.array([0, 1, 2, 3, 3, 1, 2, 3, 0, 3, 2, 2, 1], dtype=np.int64)
    model = fixed_distribution_model([0.1, 0.2, 0.3, 0.4])
    per = model_token_nll(model, tokens, 3, 2)
    assert len(per) == len(tokens) - 1 and per.sum() == pytest.approx(model_nll(model, tokens, 3, 2)[0], rel=1e-12)
    kn = KneserNeyLM(3, 4).fit(np.array([0, 1, 2, 3, 0, 1, 2, 2, 3, 1] * 3))
    lp = kn.token_log_probs(tokens[1:], history=tokens[:1])
    assert lp.sum() == pytest.approx(log_prob(kn, tokens[1:], history=tokens[:1]), rel=1e-12)
    # two fixed distributions; the data drawn 30% / 70% from them: EM finds the weight of the likelihood maximum
    rng = np.random.default_rng(0)
    p, q = np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.1, 0.7])
    draws = np.where(rng.random(20000) < 0.3, rng.choice(4, 20000, p=p), rng.choice(4, 20000, p=q))
    lam = mixture_weight(np.log(p[draws]), np.log(q[draws]))
    grid = np.linspace(0.001, 0.999, 999)
    best = grid[np.argmax([mixture_log_probs(np.log(p[draws]), np.log(q[draws]), g).sum() for g in grid])]
    assert lam == pytest.approx(best, abs=1e-3) and abs(lam - 0.3) < 0.03


def test_atomic_writes_leave_the_umask_alone_and_honour_it(tmp_path, monkeypatch):
    """fileio set the process umask at import (to read it back), a race with any other thread:
    outputs are now created the way open() creates files, 0666 less whatever the umask is."""
    import importlib
    import os

    from rnnlm import fileio

    def no_umask(_mask):
        raise AssertionError("os.umask called")

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        importlib.reload(fileio)
        fileio.write_json(tmp_path / "out" / "a.json", {"a": 1})
    finally:
        monkeypatch.undo()
        os.umask(old)
    path = tmp_path / "out" / "a.json"
    assert path.read_text() == '{\n  "a": 1\n}\n' and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_the_cache_and_dynamic_evaluation_are_fitted_on_val_alone_and_can_be_switched_off(tmp_path):
    make_project(tmp_path, models=("lstm",))
    first = ev.run_evaluate(CFG, tmp_path, models=("lstm",), log=lambda s: None)["eval"]
    test = tmp_path / "data" / "tokens" / "test.npy"
    np.save(test, np.load(test)[::-1].copy())  # another test text
    second = ev.run_evaluate(CFG, tmp_path, models=("lstm",), log=lambda s: None)["eval"]
    for group, fitted in (("cache", ("window", "theta", "weight", "val")), ("dynamic", ("eta", "decay", "val"))):
        a, b = first[group][f"lstm+{group}"], second[group][f"lstm+{group}"]
        assert {k: a[k] for k in fitted} == {k: b[k] for k in fitted} and a["test"] != b["test"]
    off = dataclasses.replace(CFG, cache=False, dynamic=False)
    off = ev.run_evaluate(off, tmp_path, models=("lstm",), log=lambda s: None)
    assert not {"cache", "dynamic"} & (set(off["eval"]) | set(off["table"]["kind"]))


def test_the_adaptive_rows_can_be_asked_for_some_models_only(tmp_path):
    make_project(tmp_path, models=("rnn", "lstm"))
    some = dataclasses.replace(CFG, cache=["lstm"], dynamic=[])
    out = ev.run_evaluate(some, tmp_path, models=("rnn", "lstm"), log=lambda s: None)["eval"]
    assert list(out["cache"]) == ["lstm+cache"] and "dynamic" not in out
    assert set(out["models"]) == {"rnn", "lstm"} and len(out["interpolated"]) == 2
    with pytest.raises(
        ParamError, match=r"evaluate\.dynamic: 'lstn' is not in models \(rnn, lstm\) \(did you mean 'lstm'\?\)$"
    ):
        ev.run_evaluate(dataclasses.replace(CFG, dynamic=["lstn"]), tmp_path, models=("rnn", "lstm"))
