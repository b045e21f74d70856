import json
import math
import os
import pickle
import re

import pytest
import torch
from conftest import config

from rnnlm.checkpoint import load_checkpoint, load_model, save_checkpoint
from rnnlm.device import resolve_device
from rnnlm.errors import ParamError, RnnlmError
from rnnlm.train import Trainer, TrainPaths
from rnnlm.vocab import Vocab

TEXT = "the time traveller for so it will be convenient to speak of him " * 40


STEPS_PER_EPOCH = 49  # 2000 train tokens, batch 4 x 10 steps


def setup(tmp_path, cell="lstm", impl="torch", model=None, **train):
    vocab = Vocab.build(list(TEXT), "char")
    ids = vocab.encode(list(TEXT))
    cfg = config(
        "train", {"epochs": 2, "batch_size": 4, "num_steps": 10, "lr": 0.01, "device": "cpu", "lr_decay": 1.0, **train}
    )
    model_cfg = config(cell, {"hidden": 16, "embedding": 8, "layers": 1, "dropout": 0.0, "impl": impl, **(model or {})})
    paths = TrainPaths.for_model(cell, tmp_path)
    return vocab, ids, model_cfg, cfg, paths


def run(tmp_path, cell="lstm", impl="torch", log=lambda *_: None, model=None, **train):
    vocab, ids, model_cfg, cfg, paths = setup(tmp_path, cell, impl, model, **train)
    trainer = Trainer(cell, model_cfg, cfg, vocab, ids[:2000], ids[2000:2300], paths, progress=False, log=log)
    return trainer, trainer.run()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_training_lowers_validation_perplexity(tmp_path, cell, impl):
    _, result = run(tmp_path, cell, impl, epochs=3)
    ppl = [row["val_perplexity"] for row in result["history"]]
    assert ppl[-1] < ppl[0] < 40
    assert result["best_val_perplexity"] == min(ppl)


def test_outputs_checkpoints_and_dvclive_logs(tmp_path):
    trainer, result = run(tmp_path, epochs=2)
    paths = trainer.paths
    best = load_checkpoint(paths.best)
    assert best["step"] == result["best_step"] and best["vocab_fingerprint"] == trainer.vocab.fingerprint
    summary = json.loads((paths.live_dir / "metrics.json").read_text())
    assert summary["best"]["val_perplexity"] == pytest.approx(result["best_val_perplexity"])
    tsv = (paths.live_dir / "plots/metrics/val/perplexity.tsv").read_text().splitlines()
    # one validation point per epoch; the x axis is the optimizer step
    assert tsv[0] == "step\tperplexity" and [r.split("\t")[0] for r in tsv[1:]] == ["49", "98"]
    assert summary["step"] == 98 and summary["epochs"] == 2 and summary["stopped_by"] == "epochs"
    timing = json.loads(paths.timing.read_text())
    assert paths.timing == tmp_path / "metrics/timing/lstm.json" and not (paths.live_dir / "timing.json").exists()
    assert timing["tokens_per_second"] > 0 and timing["device"] == "cpu"
    assert not paths.resume.exists()  # deleted once training completes
    assert not list(tmp_path.rglob("*.tmp"))


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path):
    trainer, _ = run(tmp_path, epochs=1)
    model, ckpt = load_model(trainer.paths.last, trainer.vocab.fingerprint)
    X = torch.tensor([[1, 2, 3, 4]])
    trainer.model.eval()
    model.eval()
    torch.testing.assert_close(model(X)[0], trainer.model(X)[0], rtol=0, atol=0)
    with pytest.raises(RnnlmError, match="different vocabulary"):
        load_model(trainer.paths.last, "0" * 64)


def test_truncated_checkpoint_is_refused_clearly(tmp_path):
    trainer, _ = run(tmp_path, epochs=1)
    data = trainer.paths.best.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(RnnlmError, match="truncated.pt: not a loadable rnnlm checkpoint"):
        load_checkpoint(bad)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "rnnlm-checkpoint", "version": 1, "x": Exploit(str(marker))}, evil)
    with pytest.raises(RnnlmError, match="not a loadable rnnlm checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    with open(plain, "wb") as f:
        pickle.dump({"format": "rnnlm-checkpoint"}, f)
    with pytest.raises(RnnlmError):
        load_checkpoint(plain)


def test_foreign_checkpoint_is_refused(tmp_path):
    p = tmp_path / "other.pt"
    save_checkpoint(p, {})
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(RnnlmError, match="missing format marker"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_divergence_stops_with_epoch_and_step_and_saves_nothing(tmp_path):
    with pytest.raises(
        RnnlmError,
        match=r"diverged: non-finite loss at step \d+ \(epoch 1, .*lower lstm\.lr or "
        r"train\.lr, or set train\.clip_theta",
    ):
        run(tmp_path, optimizer="adam", lr=1e37, clip_theta=0.0, epochs=1)
    with pytest.raises(RnnlmError, match=r"diverged: .* by step \d+ .*lower lstm\.lr or train\.lr"):
        run(tmp_path, optimizer="sgd", lr=1e30, clip_theta=0.0, epochs=1)
    assert not (tmp_path / "models").exists() and not (tmp_path / "checkpoints").exists()


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    _, full = run(tmp_path / "a", epochs=3, sampling="random", seed=3)

    def interrupt(msg):
        if "(epoch 2.00)" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", epochs=3, sampling="random", seed=3, log=interrupt)
    resume = TrainPaths.for_model("lstm", tmp_path / "b").resume
    assert load_checkpoint(resume)["step"] == STEPS_PER_EPOCH
    assert not (tmp_path / "b/models/lstm.pt").exists()
    messages = []
    trainer, resumed = run(tmp_path / "b", epochs=3, sampling="random", seed=3, log=messages.append)
    assert any(f"resuming after step {STEPS_PER_EPOCH}" in m for m in messages)
    assert [r["val_perplexity"] for r in resumed["history"]] == [r["val_perplexity"] for r in full["history"]]
    a = load_checkpoint(tmp_path / "a/models/lstm.last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b/models/lstm.last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = (tmp_path / "a/metrics/train/lstm/metrics.json").read_text()
    assert sa == (tmp_path / "b/metrics/train/lstm/metrics.json").read_text()


def test_resume_state_for_other_params_is_ignored(tmp_path):
    def interrupt(msg):
        if "(epoch 2.00)" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, epochs=3, log=interrupt)
    messages = []
    run(tmp_path, epochs=3, lr=0.02, log=messages.append)
    assert any("resume state is for other params, data or code; starting over" in m for m in messages)
    assert not any("resuming" in m for m in messages)
    assert sum("val ppl" in m for m in messages) == 3


def test_resume_state_of_other_code_is_ignored(tmp_path, monkeypatch):
    """Interrupted, then the package's code changes: the stage must not resume the old code's state."""
    import shutil

    import rnnlm.train

    def interrupt(msg):
        if "(epoch 2.00)" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, epochs=3, log=interrupt)
    package = tmp_path / "pkg"
    shutil.copytree(rnnlm.train.code_fingerprint.__defaults__[0], package)
    before = rnnlm.train.code_fingerprint(package)
    with open(package / "models.py", "a") as f:  # a module training imports: a comment changes nothing
        f.write("\n# a comment\n")
    assert rnnlm.train.code_fingerprint(package) == before
    with open(package / "models.py", "a") as f:  # code does
        f.write("\nLIMIT = 3\n")
    after = rnnlm.train.code_fingerprint(package)
    assert before == rnnlm.train.code_fingerprint() and after != before
    with open(package / "cli.py", "a") as f:  # a module training does not import changes nothing
        f.write("\nLIMIT = 3\n")
    assert rnnlm.train.code_fingerprint(package) == after
    monkeypatch.setattr(rnnlm.train, "code_fingerprint", lambda: after)
    messages = []
    run(tmp_path, epochs=3, log=messages.append)
    assert any("for other params, data or code; starting over" in m for m in messages)


def test_step_budget_and_validation_interval(tmp_path):
    trainer, result = run(tmp_path, epochs=100, max_steps=70, eval_every=30)
    assert [r["step"] for r in result["history"]] == [30, 60, 70]  # and once more where the budget ends
    assert result["stopped_by"] == "max_steps" and sum(r["tokens"] for r in result["history"]) == 70 * 40
    assert result["history"][-1]["epoch"] == pytest.approx(70 / STEPS_PER_EPOCH, abs=1e-3)


def test_time_budget_stops_training(tmp_path):
    _, result = run(tmp_path, epochs=100, max_minutes=1e-6)
    assert result["stopped_by"] == "max_minutes" and result["history"][-1]["step"] == 1


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_resume_between_validation_points_inside_an_epoch_is_exact(tmp_path, sampling):
    """eval_every splits epochs: a resume mid-epoch restores the batch position, the carried hidden
    state and the dropout random state, so the result equals an uninterrupted run bitwise."""
    kw = dict(epochs=2, eval_every=20, sampling=sampling, model={"dropout": 0.3, "layers": 2})
    _, full = run(tmp_path / "a", **kw)

    def interrupt(msg):
        if "step 60 " in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", log=interrupt, **kw)
    resume = load_checkpoint(TrainPaths.for_model("lstm", tmp_path / "b").resume)
    assert resume["position"] == {"step": 40, "epoch": 0, "batch": 40}
    _, resumed = run(tmp_path / "b", **kw)
    assert [r["val_perplexity"] for r in resumed["history"]] == [r["val_perplexity"] for r in full["history"]]
    a = load_checkpoint(tmp_path / "a/models/lstm.last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b/models/lstm.last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", [{"tie_weights": True, "embedding": 16}, {"softmax": "adaptive", "cutoffs": [5]}])
def test_word_level_model_options_train_and_reload(tmp_path, model):
    trainer, result = run(tmp_path, epochs=2, model=model)
    ppl = [r["val_perplexity"] for r in result["history"]]
    assert ppl[-1] < ppl[0]
    loaded, _ = load_model(trainer.paths.last, trainer.vocab.fingerprint)
    if model.get("tie_weights"):
        assert loaded.decoder.weight.data_ptr() == loaded.embedding.weight.data_ptr()
    else:
        assert loaded.adaptive is not None and loaded.config["cutoffs"] == [5]


def test_bad_training_input_names_the_param(tmp_path):
    with pytest.raises(ParamError, match=r"train\.num_steps"):
        run(tmp_path, num_steps=5000)
    if not torch.cuda.is_available():
        with pytest.raises(ParamError, match=r"train\.device: cuda requested"):
            resolve_device("cuda", "train.device")
    assert resolve_device("auto", "train.device").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_equal_checkpoints_are_byte_identical_files(tmp_path):
    """DVC hashes files: saving the same weights twice must give the same bytes."""
    payload = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 1}
    save_checkpoint(tmp_path / "a.pt", payload)
    save_checkpoint(tmp_path / "sub" / "b.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()


def test_auto_precision_trains_in_what_this_cpu_computes_natively(tmp_path, monkeypatch):
    """One real run on whatever CPU runs the tests: train.precision=auto is bf16 autocast for the
    torch LSTM where the CPU has native bfloat16 and AMX (the numbers then differ from fp32 a
    little) and exactly fp32 elsewhere; the weights stay float32 and timing.json records the precision and
    the CPU class."""
    from rnnlm.device import bf16_native, cpu_amx, cpu_capability

    calls = []
    real_autocast = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        calls.append((device_type, dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    _, fp32 = run(tmp_path / "fp32", epochs=1, precision="fp32")
    assert calls and not any(enabled for _, _, enabled in calls)
    calls.clear()
    lines = []
    trainer, auto = run(tmp_path / "auto", epochs=1, precision="auto", log=lines.append)
    timing = json.loads(trainer.paths.timing.read_text())
    assert timing["cpu_capability"] == cpu_capability()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    if bf16_native(torch.device("cpu")) and cpu_amx():
        assert calls and all(c == ("cpu", torch.bfloat16, True) for c in calls)
        assert auto["best_val_perplexity"] != fp32["best_val_perplexity"]
        assert abs(auto["best_val_perplexity"] / fp32["best_val_perplexity"] - 1) < 0.05
        assert timing["precision"] == "bf16"
    else:
        assert calls and not any(enabled for _, _, enabled in calls)
        assert auto["best_val_perplexity"] == fp32["best_val_perplexity"]
        assert timing["precision"] == "fp32"
    assert f"lstm: training on cpu ({cpu_capability()}) in {timing['precision']}" in lines[0]
    # the model file records it too: the results table's impl column reads it from there
    assert load_checkpoint(trainer.paths.best)["precision"] == timing["precision"]


@pytest.mark.parametrize("native, amx", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize(
    "cell, impl, on_native",
    [("lstm", "torch", "bf16"), ("lstm", "scratch", "fp32"), ("rnn", "torch", "fp32"), ("gru", "torch", "fp32")],
)
def test_auto_precision_is_bf16_only_where_native_and_the_model_gains(monkeypatch, native, amx, cell, impl, on_native):
    """On a CPU, bf16 only for the torch LSTM and only with AMX: an AVX512-BF16 CPU without it
    trained the recipes' LSTMs slower in bf16 than in fp32."""
    import rnnlm.device

    monkeypatch.setattr(rnnlm.device, "bf16_native", lambda device: native)
    monkeypatch.setattr(rnnlm.device, "cpu_amx", lambda: amx)
    cpu = torch.device("cpu")
    assert rnnlm.device.resolve_precision("auto", cpu, cell, impl) == (on_native if native and amx else "fp32")
    assert rnnlm.device.resolve_precision("fp32", cpu, cell, impl) == "fp32"
    if native:
        assert rnnlm.device.resolve_precision("bf16", cpu, cell, impl) == "bf16"


def test_explicit_bf16_without_native_support_is_one_error_before_any_work(tmp_path, monkeypatch):
    import rnnlm.device

    monkeypatch.setattr(rnnlm.device, "bf16_native", lambda device: False)
    with pytest.raises(
        ParamError,
        match=r"^params\.yaml: lstm\.precision: bf16 needs native bfloat16 .* has none; "
        r"use auto \(bf16 where the device has it, fp32 elsewhere\) or fp32$",
    ):
        rnnlm.device.resolve_precision("bf16", torch.device("cpu"), "lstm", "torch", "lstm.precision")
    with pytest.raises(ParamError, match=r"train\.precision: bf16 needs native bfloat16"):
        run(tmp_path, epochs=1, precision="bf16")
    assert not any(tmp_path.rglob("*"))  # nothing written


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("embedding", [0, 8])
def test_bf16_train_step_works_for_the_scratch_cells(cell, embedding):
    """Under autocast the scratch layers' input projection is bfloat16 while their time loops
    run in float32 (two layers: the second reads the first's float outputs)."""
    from rnnlm.models import RNNLM
    from rnnlm.train import train_step

    torch.manual_seed(0)
    model = RNNLM(cell, "scratch", 11, hidden=8, layers=2, dropout=0.0, embedding=embedding)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    X, Y = torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (3, 5))
    state = None
    for _ in range(2):  # the second step starts from the carried state
        loss, state = train_step(model, optimizer, X, Y, state, 1.0, torch.bfloat16)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(
        p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()
    )


def test_cosine_schedule_decays_lr_to_a_tenth_over_the_step_budget(tmp_path):
    _, result = run(tmp_path, epochs=100, max_steps=60, eval_every=20, lr_schedule="cosine", lr=0.01)
    lrs = [r["lr"] for r in result["history"]]
    assert lrs[0] == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 3))))
    assert lrs[0] > lrs[1] > lrs[2] == pytest.approx(0.001)


def test_adaptive_cutoffs_past_the_vocabulary_name_the_param(tmp_path):
    """PTB's cutoffs kept when switching to a character corpus: one error naming lstm.cutoffs and
    the vocabulary's size, not AdaptiveLogSoftmaxWithLoss's ValueError; nothing written."""
    V = len(Vocab.build(list(TEXT), "char"))
    with pytest.raises(
        ParamError,
        match=rf"^params\.yaml: lstm\.cutoffs: \[100\] does not fit a vocabulary of {V} "
        rf"tokens: each cluster bound must be at most {V - 1}; use cutoffs: \[\]",
    ):
        run(tmp_path, model={"softmax": "adaptive", "cutoffs": [100]})
    assert not any(tmp_path.rglob("*"))
    _, result = run(tmp_path / "ok", epochs=1, model={"softmax": "adaptive", "cutoffs": [V - 1]})
    assert math.isfinite(result["best_val_perplexity"])


def test_a_full_disk_while_saving_a_checkpoint_is_one_error_naming_the_file(tmp_path, monkeypatch):
    """torch's zip writer failed with a 32-line "unexpected pos" traceback and no file named; the
    checkpoint is serialised in memory, so the write fails as an OSError: one line, old file whole."""
    import errno
    from pathlib import Path

    path = tmp_path / "models" / "lstm.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.ones(3)}})
    before = path.read_bytes()
    real_write = Path.write_bytes

    def full_disk(self, data):
        real_write(self, bytes(data)[:10])  # a part is written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(
        RnnlmError, match=rf"^{re.escape(str(path))}: cannot write the checkpoint: No space left on device$"
    ):
        save_checkpoint(path, {"state_dict": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["lstm.pt"]


def test_a_run_that_fails_keeps_the_last_runs_metrics(tmp_path, monkeypatch):
    """DVCLive wiped metrics/train/<model>/ when a run started, so a run that then failed (a full disk
    at the checkpoint) left no metrics: DVCLive now writes beside, and the directory is replaced at the end."""
    import errno

    trainer, _ = run(tmp_path, epochs=1)
    live = trainer.paths.live_dir
    before = {p.relative_to(live): p.read_bytes() for p in live.rglob("*") if p.is_file()}
    timing = trainer.paths.timing.read_bytes()
    assert "metrics.json" in {p.name for p in before} and json.loads(timing)["tokens"] > 0

    def full_disk(path, payload):
        raise RnnlmError(f"{path}: cannot write the checkpoint: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr("rnnlm.train.save_checkpoint", full_disk)
    with pytest.raises(RnnlmError, match="No space left on device"):
        run(tmp_path, epochs=2)
    assert {p.relative_to(live): p.read_bytes() for p in live.rglob("*") if p.is_file()} == before
    assert trainer.paths.timing.read_bytes() == timing
    monkeypatch.undo()
    _, result = run(tmp_path, epochs=2)  # the next run that ends replaces them whole
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["epochs"] == 2 and summary["step"] == result["history"][-1]["step"]
    assert len((live / "plots/metrics/val/perplexity.tsv").read_text().splitlines()) == 3
    assert not trainer.paths.live_staging.exists() and not list(live.parent.glob(".*"))


def test_validation_during_training_can_be_bounded_to_the_first_tokens(tmp_path):
    """train.eval_tokens: each validation point scores the val split's first N tokens (a bounded
    cost on a big corpus, as nanoGPT's eval_iters); 0 scores all of it."""
    from rnnlm.metrics import model_nll, perplexity

    vocab, ids, _, _, _ = setup(tmp_path)
    val = ids[2000:2300]
    trainer, bounded = run(tmp_path / "bounded", epochs=1, eval_tokens=50)
    model = trainer.model
    cpu = torch.device("cpu")
    first = perplexity(*model_nll(model, val[:51], 1, trainer.cfg.num_steps, cpu))
    whole = perplexity(*model_nll(model, val, 1, trainer.cfg.num_steps, cpu))
    assert bounded["history"][-1]["val_perplexity"] == pytest.approx(first, rel=1e-12) != pytest.approx(whole)
    _, full = run(tmp_path / "full", epochs=1, eval_tokens=0)
    assert full["history"][-1]["val_perplexity"] == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize(
    "busy, threads, said",
    [
        (1.2, 1, " (1 core(s) busy with other work; train.threads fixes the count)"),
        (0.3, 2, ""),
        (None, 2, ""),
        (1.9, 1, " (2 core(s) busy"),
    ],
)
def test_default_threads_leave_the_cores_other_work_holds(tmp_path, monkeypatch, busy, threads, said):
    """train.threads 0: torch's default (2 here), less the cores busy at the start (at least 1),
    said in the log line and recorded in timing.json; an explicit count is kept as it is."""
    import rnnlm.device

    monkeypatch.setattr(rnnlm.device, "busy_cores", lambda seconds=0.25: busy)
    monkeypatch.setattr(rnnlm.device, "cores", lambda: 2)
    torch.set_num_threads(2)
    lines = []
    trainer, result = run(tmp_path / "auto", epochs=1, threads=0, log=lines.append, precision="fp32")
    assert result["threads"] == threads and torch.get_num_threads() == threads
    assert f"in fp32, {threads} thread(s)" in lines[0] and (said in lines[0] if said else "busy" not in lines[0])
    torch.set_num_threads(2)
    _, fixed = run(tmp_path / "fixed", epochs=1, threads=2, precision="fp32")
    assert fixed["threads"] == 2


def test_busy_cores_sees_a_spinning_process():
    import multiprocessing

    from rnnlm.device import busy_cores

    spinner = multiprocessing.Process(target=_spin, daemon=True)
    spinner.start()
    try:
        busy = busy_cores(0.5)
    finally:
        spinner.terminate()
        spinner.join()
    assert busy is not None and busy >= 0.8


def _spin():
    while True:
        pass


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bptt_autograd_trains_like_the_fused_default(tmp_path, cell):
    """``bptt: autograd`` (autograd through the step equations) is a params choice of a scratch
    model section, and trains to the fused path's numbers up to rounding."""
    fused, a = run(tmp_path / "fused", cell, "scratch", epochs=1)
    auto, b = run(tmp_path / "autograd", cell, "scratch", epochs=1, model={"bptt": "autograd"})
    assert (
        {layer.bptt for layer in auto.model.rnn.layers}
        == {"autograd"}
        != {layer.bptt for layer in fused.model.rnn.layers}
    )
    assert b["best_val_perplexity"] == pytest.approx(a["best_val_perplexity"], rel=1e-4)
