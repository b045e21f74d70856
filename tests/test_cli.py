"""The `rnnlm` command (sample, score, info) on model files copied alone, and its errors."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import config

from rnnlm import cli, score
from rnnlm.checkpoint import load_checkpoint, load_model
from rnnlm.errors import RnnlmError
from rnnlm.metrics import model_nll, perplexity
from rnnlm.sample import sample_one
from rnnlm.train import Trainer, TrainPaths
from rnnlm.vocab import Vocab, heldout_text, tokenize

TEXT = "the time traveller for so it will be convenient to speak of him was expounding a recondite matter " * 30
SOURCE = {"corpus": "unit-test", "sha256": "ab" * 32, "clean": {"mode": "letters", "strip_gutenberg": True}}


def train(tmp_path, level="char", cell="lstm") -> tuple[Vocab, dict, TrainPaths]:
    tokens = tokenize(TEXT, level)
    vocab = Vocab.build(tokens[: len(tokens) * 8 // 10], level)
    vocab.source = SOURCE
    ids = vocab.encode(tokens)
    cut = len(ids) * 8 // 10
    cfg = config("train", {"epochs": 1, "batch_size": 4, "num_steps": 10, "lr": 0.01, "device": "cpu", "lr_decay": 1.0})
    model_cfg = config(cell, {"hidden": 16, "embedding": 8, "layers": 1, "dropout": 0.0})
    paths = TrainPaths.for_model(cell, tmp_path / "project")
    Trainer(cell, model_cfg, cfg, vocab, ids[:cut], ids[cut:], paths, progress=False, log=lambda *_: None).run()
    return vocab, {"val": ids[cut:], "val_tokens": tokens[cut:]}, paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model file copied alone into an empty directory."""
    tmp = tmp_path_factory.mktemp("cli")
    vocab, data, paths = train(tmp)
    alone = tmp / "elsewhere" / "lstm.pt"
    alone.parent.mkdir()
    shutil.copy2(paths.best, alone)
    return vocab, data, alone, tmp


def rnnlm(capsys, *argv) -> tuple[int, str, str]:
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_model_file_carries_its_vocabulary_and_source(trained):
    vocab, _, alone, _ = trained
    ckpt = load_checkpoint(alone)
    assert ckpt["name"] == "lstm" and ckpt["version"] == 2
    assert Vocab.from_dict(ckpt["vocab"]).tokens == vocab.tokens and ckpt["vocab"]["source"] == SOURCE


def test_sample_prints_the_sample_stages_text_for_the_same_seed(trained, capsys):
    vocab, _, alone, tmp = trained
    code, out, err = rnnlm(
        capsys, "sample", "--model", str(alone), "--prefix", "time traveller", "--length", "30", "--seed", "3"
    )
    assert code == 0 and err == ""
    model, _ = load_model(alone)
    cfg = config("sample", {"length": 30, "seed": 3})
    assert out == sample_one(model, vocab, "lstm", "time traveller", cfg) + "\n"
    assert out.startswith("time traveller") and len(out) == len("time traveller") + 30 + 1
    again = rnnlm(
        capsys, "sample", "--model", str(alone), "--prefix", "time traveller", "--length", "30", "--seed", "3"
    )
    other = rnnlm(
        capsys, "sample", "--model", str(alone), "--prefix", "time traveller", "--length", "30", "--seed", "4"
    )
    assert again[1] == out and other[1] != out
    greedy = rnnlm(capsys, "sample", "--model", str(alone), "--prefix", "the", "--strategy", "greedy")
    assert rnnlm(capsys, "sample", "--model", str(alone), "--prefix", "the", "--temperature", "0")[1] == greedy[1]


def test_score_of_a_heldout_split_equals_the_exact_evaluation(trained, tmp_path, capsys):
    vocab, data, alone, _ = trained
    model, _ = load_model(alone)
    nll, n = model_nll(model, data["val"], 1, 64)
    split = tmp_path / "val.txt"
    split.write_text(heldout_text(vocab, data["val_tokens"]), encoding="utf-8")
    code, out, _ = rnnlm(capsys, "score", "--model", str(alone), str(split))
    assert code == 0
    assert (
        out == f"{split}: perplexity {perplexity(nll, n):.6f}, {nll / n / np.log(2):.6f} bits per char, "
        f"{n} chars scored (0 <unk>)\n"
    )


def test_score_cleans_like_the_corpus_reads_stdin_and_totals(trained, tmp_path, capsys, monkeypatch):
    _, _, alone, _ = trained
    shouty = tmp_path / "shouty.txt"
    shouty.write_text("THE TIME -- Traveller!\n\nfor so it WILL be convenient.\n", encoding="utf-8")
    clean = tmp_path / "clean.txt"
    clean.write_text("the time traveller for so it will be convenient", encoding="utf-8")
    code, out, _ = rnnlm(capsys, "score", "--model", str(alone), str(shouty), str(clean))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and lines[2].startswith("total: ")
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]  # cleaned to the same text
    raw = rnnlm(capsys, "score", "--no-clean", "--model", str(alone), str(shouty))[1]
    assert "<unk>)" in raw and " (0 <unk>)" not in raw  # uppercase letters are not in the vocabulary
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(clean.read_bytes())))
    code, out, _ = rnnlm(capsys, "score", "--model", str(alone), "-")
    assert code == 0 and out.startswith("<stdin>: ") and out.split(": ", 1)[1] == lines[1].split(": ", 1)[1] + "\n"


def test_info_is_the_model_card(trained, capsys):
    _, _, alone, _ = trained
    code, out, _ = rnnlm(capsys, "info", "--model", str(alone))
    ckpt = load_checkpoint(alone)
    assert code == 0
    assert "model:       lstm (lstm, impl torch)" in out and "hidden 16, layers 1, embedding 8" in out
    assert "vocabulary:  " in out and "char types" in out
    assert "corpus:      unit-test (sha256 abababababab), clean mode letters" in out
    assert f"val perplexity {ckpt['val_perplexity']:.6f}" in out
    assert "evaluated:" not in out  # no metrics/eval.json beside a file copied alone


def test_info_shows_the_test_perplexity_when_its_project_evaluated_it(trained, capsys):
    _, _, alone, tmp = trained
    project = tmp / "project"
    ckpt = load_checkpoint(project / "models" / "lstm.pt")
    eval_json = project / "metrics" / "eval.json"
    eval_json.write_text(
        f'{{"models": {{"lstm": {{"val": {{"perplexity": {ckpt["val_perplexity"]!r}}}, '
        '"test": {"perplexity": 7.5, "bits_per_token": 2.9}}}}'
    )
    out = rnnlm(capsys, "info", "--model", str(project / "models" / "lstm.pt"))[1]
    assert "evaluated:   test perplexity 7.500000, 2.900000 bits per token" in out
    eval_json.write_text('{"models": {"lstm": {"val": {"perplexity": 1.0}, "test": {"perplexity": 7.5}}}}')
    assert "evaluated:" not in rnnlm(capsys, "info", "--model", str(project / "models" / "lstm.pt"))[1]
    eval_json.write_text('{"models": {"lstm": {"val": {"perplexity": null}, "test": {"perplexity": 7.5}}}}')
    assert "evaluated:" not in rnnlm(capsys, "info", "--model", str(project / "models" / "lstm.pt"))[1]  # overflowed


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("problem", ["truncated", "foreign", "pickled-code", "old-style", "missing"])
def test_a_bad_model_file_is_one_clear_error(trained, tmp_path, capsys, problem):
    _, _, alone, _ = trained
    bad = tmp_path / "bad.pt"
    marker = tmp_path / "marker"
    if problem == "truncated":
        bad.write_bytes(alone.read_bytes()[: alone.stat().st_size // 2])
    elif problem == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif problem == "pickled-code":
        torch.save({"format": "rnnlm-checkpoint", "version": 2, "x": _RunsCode(marker)}, bad)
    elif problem == "old-style":
        old = {k: v for k, v in load_checkpoint(alone).items() if k not in ("vocab", "name")}
        torch.save({**old, "version": 1}, bad)
    expected = {
        "truncated": "not a loadable rnnlm checkpoint",
        "foreign": "not an rnnlm checkpoint",
        "pickled-code": "not a loadable rnnlm checkpoint",
        "old-style": "an old-style model file",
        "missing": "checkpoint not found",
    }[problem]
    for command in (["sample"], ["score", str(alone)], ["info"]):
        code, out, err = rnnlm(capsys, command[0], "--model", str(bad), *command[1:])
        assert code == 1 and out == ""
        assert err.startswith(f"error: {bad}: ") and expected in err and len(err.splitlines()) == 1, err
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "the input is empty"),
        (b"   \n\n", "whitespace only"),
        ("日本語のテキストだけ。".encode(), "keeps only"),
        (b"\xff\xfe broken", "not valid UTF-8"),
        (b"a", "scoring needs at least 2"),
    ],
)
def test_a_text_that_cannot_be_scored_is_one_clear_error(trained, tmp_path, capsys, content, expected):
    _, _, alone, _ = trained
    text = tmp_path / "text.txt"
    text.write_bytes(content)
    code, out, err = rnnlm(capsys, "score", "--model", str(alone), str(text))
    assert code == 1 and out == "" and expected in err and err.startswith(f"error: {text}"), err
    assert len(err.splitlines()) == 1


def test_a_text_with_no_vocabulary_token_is_refused(trained, tmp_path, capsys):
    _, _, alone, _ = trained
    text = tmp_path / "digits.txt"
    text.write_text("12345678", encoding="utf-8")
    code, _, err = rnnlm(capsys, "score", "--no-clean", "--model", str(alone), str(text))
    assert code == 1 and "no token is in the model's vocabulary" in err
    code, _, err = rnnlm(capsys, "score", "--model", str(alone), str(tmp_path / "absent.txt"))
    assert code == 1 and err == f"error: {tmp_path / 'absent.txt'}: no such file\n"
    code, _, err = rnnlm(capsys, "score", "--model", str(alone), str(tmp_path))
    assert code == 1 and err == f"error: {tmp_path}: a directory, not a text file\n"


def test_word_level_models_score_and_sample_in_words(tmp_path, capsys):
    vocab, data, paths = train(tmp_path, level="word", cell="gru")
    split = tmp_path / "val.txt"
    split.write_text(heldout_text(vocab, data["val_tokens"]), encoding="utf-8")
    nll, n = model_nll(load_model(paths.best)[0], data["val"], 1, 64)
    out = rnnlm(capsys, "score", "--model", str(paths.best), str(split))[1]
    assert f"perplexity {perplexity(nll, n):.6f}" in out and f"{n} words scored" in out
    out = rnnlm(capsys, "sample", "--model", str(paths.best), "--prefix", "the time", "--length", "5")[1]
    assert out.startswith("the time ") and len(out.split()) == 7


def test_the_tools_sampling_defaults_are_the_committed_params():
    """Outside a project there is no params.yaml: the tool's defaults repeat its `sample` section."""
    from conftest import ROOT

    from rnnlm.params import read_params

    committed = read_params(ROOT / "params.yaml")["sample"]
    assert {k: committed[k] for k in cli.SAMPLE_DEFAULTS} == cli.SAMPLE_DEFAULTS


@pytest.mark.parametrize("command", [["sample", "--length", "5000"], ["info"]])
def test_a_closed_pipe_is_a_normal_end(trained, command):
    """`rnnlm sample ... | head -c 5`: no BrokenPipeError traceback, exit 0."""
    import os
    import subprocess

    _, _, model, _ = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = "import sys; from rnnlm import cli; cli.main(sys.argv[1:])"
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *command, "--model", str(model)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdout.read(5)
        proc.stdout.close()  # the reader goes away before the writer is done
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0 and err == "", err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["sample", "--length", "-1"], "error: --length: must be >= 0, got -1"),
        (["sample", "--top-k", "0"], "error: --top-k: must be positive, got 0"),
        (["sample", "--seed", "-3"], "error: --seed: must be in [0, 4.29497e+09], got -3"),
        (
            ["info", "--device", "cuda"],
            "error: --device: cuda requested but no cuda device is available; use auto or cpu",
        ),
    ],
)
def test_a_bad_flag_is_blamed_on_the_flag_not_params_yaml(trained, capsys, argv, expected):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    _, _, model, _ = trained
    code, out, err = rnnlm(capsys, *argv, "--model", str(model))
    assert code == 1 and out == "" and err.strip().splitlines() == [expected]


@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("val_perplexity", None, "NoneType 'None'"),
        ("step", "12", "str '12'"),
        ("val_perplexity", "missing", "missing"),
        ("model_config", [1], "list '[1]'"),
    ],
)
def test_a_malformed_model_file_is_one_error_naming_the_field(trained, tmp_path, capsys, field, value, shown):
    """rnnlm info read val_perplexity blindly (TypeError on None): the metadata is checked on load."""
    _, _, alone, _ = trained
    ckpt = load_checkpoint(alone)
    if value == "missing":
        del ckpt[field]
    else:
        ckpt[field] = value
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    expected = "val_perplexity" if field == "val_perplexity" else field
    for command in (["info"], ["sample"]):
        code, out, err = rnnlm(capsys, *command, "--model", str(bad))
        assert code == 1 and out == ""
        kind = "float" if field == "val_perplexity" else "int" if field == "step" else "dict"
        assert err.strip().splitlines() == [
            f"error: {bad}: a malformed model file: {expected} is {shown}, expected {kind}"
        ]


@pytest.mark.parametrize("given", ["/dev/null", "directory", "other project"])
def test_deletion_is_advised_only_for_the_projects_own_files(trained, tmp_path, capsys, given):
    """`rnnlm --model` takes any file: an unloadable one is reported without telling the user to
    delete it; the pipeline's own model files (evaluate, sample) get the advice to rerun training."""
    from rnnlm.checkpoint import load_model

    if given == "directory":
        path = tmp_path
    elif given == "other project":
        path = tmp_path / "elsewhere" / "models" / "lstm.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a zip")
    else:
        path = "/dev/null"
    code, out, err = rnnlm(capsys, "info", "--model", str(path))
    assert code == 1 and len(err.splitlines()) == 1 and "delete" not in err and "rerun" not in err, err
    if given == "directory":
        assert err.strip() == f"error: {path}: a directory, not a model file"
    else:
        with pytest.raises(
            RnnlmError,
            match=r"not a loadable rnnlm checkpoint .*; delete it and rerun its training "
            r"stage \(dvc repro train@<model>\)$",
        ):
            load_model(path, own=True)


def test_a_trailing_newline_is_scored_the_same_whatever_the_text_holds(trained, tmp_path, capsys):
    """ "the time traveller was here\n" kept its newline (an <unk> in a letters model) because the
    text was otherwise clean; with a capital T it was cleaned away: both now score alike."""
    _, _, alone, _ = trained
    files = {}
    for name, text in (
        ("plain", "the time traveller was here\n"),
        ("capital", "The time traveller was here\n"),
        ("comma", "the time traveller, was here\n"),
        ("bare", "the time traveller was here"),
    ):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text(text, encoding="utf-8")
    code, out, _ = rnnlm(capsys, "score", "--model", str(alone), *map(str, files.values()))
    scores = {line.split(": ", 1)[1] for line in out.splitlines() if not line.startswith("total")}
    assert code == 0 and len(scores) == 1 and scores.pop().endswith("26 chars scored (0 <unk>)"), out


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_long_text_is_scored_as_a_stream_with_the_same_numbers(trained, tmp_path, capsys, monkeypatch, source):
    """`rnnlm score` read a text whole (95 bytes of memory a character): now in pieces, the same scores."""
    _, _, alone, _ = trained
    path = tmp_path / "long.txt"
    path.write_text(
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\nThe Time Traveller, was here.\r\n" * 30
        + "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nfooter\n",
        encoding="utf-8",
    )
    if source == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    whole = rnnlm(capsys, "score", "--model", str(alone), str(path))
    monkeypatch.setattr(score, "PIECE", 50)
    streamed = rnnlm(capsys, "score", "--model", str(alone), "-" if source == "stdin" else str(path))
    assert whole[0] == streamed[0] == 0 and streamed[1].split(": ", 1)[1] == whole[1].split(": ", 1)[1]
    assert int(whole[1].split(" chars scored")[0].rsplit(" ", 1)[1]) > 30 * 50  # many pieces of 50 bytes


@pytest.mark.parametrize("source", ["/dev/zero", "stdin"])
def test_an_endless_binary_input_stops_at_its_first_nul(trained, capsys, monkeypatch, source):
    """`rnnlm score /dev/zero` ran out of memory: a device or pipe is copied piece by piece, checked as it goes."""
    _, _, alone, _ = trained
    if source == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the time traveller " * 100000 + b"\0")))
    code, out, err = rnnlm(capsys, "score", "--model", str(alone), "/dev/zero" if source != "stdin" else "-")
    offset = 0 if source == "/dev/zero" else 1900000
    label = "<stdin>" if source == "stdin" else "/dev/zero"
    assert (
        code == 1
        and out == ""
        and err.startswith(f"error: {label}: a binary file, not text (NUL byte at offset {offset})")
    )


def test_a_long_utf16_text_is_named_as_such(trained, tmp_path, capsys, monkeypatch):
    """A UTF-16 file longer than a piece was called binary: its first piece, cut after a line
    break, had an odd length. The encoding is checked on the text's first bytes."""
    _, _, alone, _ = trained
    path = tmp_path / "wide.txt"
    path.write_bytes("the time traveller\n".encode("utf-16") * 20)
    monkeypatch.setattr(score, "PIECE", 64)
    code, out, err = rnnlm(capsys, "score", "--model", str(alone), str(path))
    assert code == 1 and out == "" and err.startswith(f"error: {path}: UTF-16LE text, not UTF-8; convert it first")


def test_a_transformer_model_file_scores_samples_and_has_a_card(tmp_path, capsys):
    """The tools read a Transformer's file as a recurrent model's: score equals the exact evaluation
    (the sliding window, whatever rnnlm score's piece size), sample and info work."""
    tokens = tokenize(TEXT, "char")
    vocab = Vocab.build(tokens[: len(tokens) * 8 // 10], "char")
    vocab.source = SOURCE
    ids = vocab.encode(tokens)
    cut = len(ids) * 8 // 10
    cfg = config("train", {"epochs": 1, "batch_size": 4, "num_steps": 10, "lr": 0.01, "device": "cpu"})
    model_cfg = config("transformer", {"d_model": 16, "layers": 1, "heads": 2, "context": 10})
    paths = TrainPaths.for_model("transformer", tmp_path)
    Trainer("transformer", model_cfg, cfg, vocab, ids[:cut], ids[cut:], paths, progress=False, log=print).run()
    capsys.readouterr()
    model, _ = load_model(paths.best)
    nll, n = model_nll(model, ids[cut:], 1, 64)
    split = tmp_path / "val.txt"
    split.write_text(heldout_text(vocab, tokens[cut:]), encoding="utf-8")
    code, out, _ = rnnlm(capsys, "score", "--model", str(paths.best), str(split))
    assert code == 0 and out.startswith(f"{split}: perplexity {perplexity(nll, n):.6f}, ")
    code, out, _ = rnnlm(capsys, "info", "--model", str(paths.best))
    assert code == 0 and "model:       transformer (transformer, impl torch)" in out
    assert "d_model 16, layers 1, heads 2, context 10, dropout 0.0, softmax full, tied" in out
    code, out, _ = rnnlm(capsys, "sample", "--model", str(paths.best), "--prefix", "the time", "--length", "20")
    assert code == 0 and out.startswith("the time") and len(out) == len("the time") + 20 + 1


def test_score_with_the_cache_or_dynamic_evaluation_uses_the_settings_evaluate_fitted(trained, tmp_path, capsys):
    """`rnnlm score --cache` / `--dynamic` on a model in its project gives the evaluate stage's
    adaptive scores of the same text; a model file without fitted settings is one clear error."""
    from rnnlm.evaluate import cache_scores, dynamic_scores

    vocab, data, alone, tmp = trained
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    model_file = project / "models" / "lstm.pt"
    shutil.copy2(alone, model_file)
    model, ckpt = load_model(model_file)
    train_ids = vocab.encode(tokenize(TEXT, "char"))[: len(tokenize(TEXT, "char")) * 8 // 10]
    (project / "data" / "tokens").mkdir(parents=True)
    np.save(project / "data" / "tokens" / "train.npy", train_ids)
    splits = {"train": train_ids, "val": data["val"], "test": data["val"]}
    cache_fit, cache_val = cache_scores(model, splits)
    dyn_fit, dyn_val = dynamic_scores(model, splits)
    report = {"models": {"lstm": {"val": {"perplexity": ckpt["val_perplexity"]}}}}
    report |= {"cache": {"lstm+cache": cache_fit}, "dynamic": {"lstm+dynamic": dyn_fit}}
    (project / "metrics").mkdir()
    (project / "metrics" / "eval.json").write_text(json.dumps(report))
    split = tmp_path / "val.txt"
    split.write_text(heldout_text(vocab, data["val_tokens"]), encoding="utf-8")
    for flag, expected in (("--cache", cache_val), ("--dynamic", dyn_val)):
        code, out, err = rnnlm(capsys, "score", flag, "--model", str(model_file), str(split))
        assert code == 0, err
        assert out.startswith(f"{split}: perplexity {expected['test']['perplexity']:.6f}, ")
    plain = rnnlm(capsys, "score", "--model", str(model_file), str(split))[1]
    assert plain != out
    # a fit that kept the model as trained (eta 0) needs no gradients and no training tokens
    (project / "data" / "tokens" / "train.npy").unlink()
    report["dynamic"]["lstm+dynamic"] |= {"eta": 0.0, "decay": 0.0}
    (project / "metrics" / "eval.json").write_text(json.dumps(report))
    assert rnnlm(capsys, "score", "--dynamic", "--model", str(model_file), str(split))[1] == plain
    report["dynamic"]["lstm+dynamic"]["eta"] = 3e-4  # a real step needs the training tokens: one error line
    (project / "metrics" / "eval.json").write_text(json.dumps(report))
    code, _, err = rnnlm(capsys, "score", "--dynamic", "--model", str(model_file), str(split))
    assert code == 1 and "train.npy: not found" in err and err.count("\n") == 1
    code, _, err = rnnlm(capsys, "score", "--cache", "--model", str(alone), str(split))
    assert code == 1 and err.startswith("error: --cache: no cache settings fitted for ") and err.count("\n") == 1
