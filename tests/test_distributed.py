"""Issue 12: several processes (torchrun + DistributedDataParallel, `train.nproc`), fp16, the
device choice. The CUDA and nccl paths cannot run here (no GPU); their device-independent parts do."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import config, make_project, ran_stages, run_stage_script

from rnnlm import distributed
from rnnlm.batching import batches
from rnnlm.device import resolve_device
from rnnlm.errors import ParamError, RnnlmError
from rnnlm.train import Trainer, TrainPaths, train_step
from rnnlm.vocab import Vocab

TEXT = "the time traveller for so it will be convenient to speak of him " * 40


# --------------------------------------------------------------------------- checks before any work
def train_cfg(**updates):
    return config("train", {"device": "cpu", **updates})


def test_a_world_larger_than_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "cores", lambda: 2)
    with pytest.raises(ParamError, match=r"train\.nproc: 3 processes, but this machine has 2 CPU cores"):
        distributed.check(train_cfg(nproc=3, batch_size=6), torch.device("cpu"), 3, 3)
    distributed.check(train_cfg(nproc=2, batch_size=6), torch.device("cpu"), 2, 2)  # fits


def test_nccl_without_cuda_is_refused():
    with pytest.raises(ParamError, match=r"train\.backend: nccl needs CUDA"):
        distributed.check(train_cfg(nproc=2, backend="nccl"), torch.device("cpu"), 2, 2)
    assert distributed.backend(train_cfg(backend="auto"), torch.device("cpu")) == "gloo"
    assert distributed.backend(train_cfg(backend="auto"), torch.device("cuda")) == "nccl"


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ParamError, match=r"train\.batch_size: batch_size=9 does not split evenly over 2"):
        distributed.check(train_cfg(nproc=2, batch_size=9), torch.device("cpu"), 2, 2)
    with pytest.raises(ParamError, match=r"train\.nproc: .*not on mps"):
        distributed.check(train_cfg(nproc=2), torch.device("mps"), 2, 2)


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ParamError,
        match=r"^params\.yaml: train\.nproc: 2 processes, but this machine has 1 CUDA "
        r"device\(s\): one process per GPU$",
    ):
        distributed.check(train_cfg(nproc=2, device="cuda"), torch.device("cuda"), 2, 2)


def test_a_rank_that_exits_with_another_status_is_reported_once(monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def failed_run(args):
        raise ChildFailedError("stages.train", {1: ProcessFailure(local_rank=1, pid=4321, exitcode=2, error_file="")})

    monkeypatch.setattr("torch.distributed.run.run", failed_run)
    with pytest.raises(
        RnnlmError,
        match=r"^stages\.train lstm: rank 1 of 2 exited with status 2, so every rank "
        r"stopped; the next run resumes after the last validation point$",
    ):
        distributed.launch(2, "stages.train", ["lstm"])


def test_a_lost_peer_becomes_one_error_line(monkeypatch):
    """gloo reports a vanished rank as a RuntimeError; other RuntimeErrors pass through."""
    monkeypatch.setattr(distributed, "check", lambda *args: None)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *args, **kwargs: None)
    world = distributed.World(rank=1, size=2)
    with pytest.raises(
        RnnlmError,
        match=r"^rank 1 of 2 lost contact with another rank "
        r"\(Connection closed by peer \[127\.0\.0\.1\]:5678\)$",
    ):
        with distributed.process_group(world, train_cfg(nproc=2)):
            raise RuntimeError(
                "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                "[127.0.0.1]:5678. More detail"
            )
    with pytest.raises(RuntimeError, match="^a bug$"):
        with distributed.process_group(world, train_cfg(nproc=2)):
            raise RuntimeError("a bug")


@pytest.mark.parametrize("case", ["too many processes", "nccl on the cpu"])
def test_the_stage_refuses_a_world_it_cannot_run_before_any_work(tmp_path, case):
    """The checks run before the data is read or torchrun starts: an empty directory with a
    params.yaml is enough to see the one-line error."""
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    nproc = distributed.cores() + 1 if case == "too many processes" else 2
    params["train"].update(nproc=nproc, batch_size=32 * nproc, device="cpu")
    if case == "nccl on the cpu":
        params["train"]["backend"] = "nccl"
        expected = (
            "error: params.yaml: train.backend: nccl needs CUDA devices, and train.device resolves to cpu "
            "here; use backend auto or gloo"
        )
    else:
        expected = (
            f"error: params.yaml: train.nproc: {nproc} processes, but this machine has {distributed.cores()} CPU cores"
        )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = run_stage_script("train", tmp_path, args=["lstm"])
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_the_rows_of_the_ranks_cover_the_minibatch_once():
    rows = [distributed.World(rank, 4).rows(12) for rank in range(4)]
    assert [list(range(12))[r] for r in rows] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert distributed.World().rows(12) == slice(0, 12)


# --------------------------------------------------------------------------- device and precision
def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch):
    for found, expected in (
        (torch.device("cuda"), "cuda"),
        (torch.device("mps"), "mps"),
        (None, "cpu"),
        (torch.device("xpu"), "cpu"),
    ):
        monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False, d=found: d)
        assert resolve_device("auto", "train.device").type == expected
    if not torch.backends.mps.is_available():
        with pytest.raises(ParamError, match=r"train\.device: mps requested but no mps device"):
            resolve_device("mps", "train.device")


def test_minibatches_are_made_on_the_token_tensor_without_changing_them():
    tokens = np.arange(500) % 37
    for sampling in ("random", "sequential"):
        a = list(batches(tokens, 4, 10, sampling, np.random.default_rng(3)))
        b = list(batches(torch.from_numpy(tokens.astype(np.int64)), 4, 10, sampling, np.random.default_rng(3)))
        assert len(a) == len(b) > 0 and all(torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fp16_step_scales_the_loss_and_keeps_float32_weights(cell):
    """The GradScaler path of the step (scale, unscale before clipping, step, update), run on the
    CPU with the scratch cells (the CPU has no float16 kernel for torch's LSTM; on CUDA any impl)."""
    from rnnlm.models import RNNLM

    torch.manual_seed(0)
    model = RNNLM(cell, "scratch", 11, hidden=8, layers=1, embedding=4)
    reference = RNNLM(cell, "scratch", 11, hidden=8, layers=1, embedding=4)
    reference.load_state_dict(model.state_dict())
    X, Y = torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (3, 5))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    loss16, _ = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), X, Y, None, 1.0, torch.float16, scaler)
    loss32, _ = train_step(reference, torch.optim.SGD(reference.parameters(), lr=0.1), X, Y, None, 1.0)
    assert loss16.dtype == torch.float32 and abs(float(loss16) / float(loss32) - 1) < 1e-2
    assert scaler.get_scale() == 2.0**10  # finite gradients: the step was taken, the scale kept
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for p, q in zip(model.parameters(), reference.parameters()):  # the unscaled gradient was applied
        assert torch.allclose(p, q, atol=2e-3)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_shrinks():
    from rnnlm.models import RNNLM

    torch.manual_seed(0)
    model = RNNLM("gru", "scratch", 11, hidden=8, layers=1, embedding=4)
    before = [p.detach().clone() for p in model.parameters()]
    X, Y = torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (3, 5))
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)  # the scaled loss overflows float32
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), X, Y, None, 1.0, torch.float16, scaler)
    assert scaler.get_scale() < 1e38
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_fp16_on_the_cpu_is_refused_before_training(tmp_path):
    vocab = Vocab.build(list(TEXT), "char")
    ids = vocab.encode(list(TEXT))
    cfg = config("train", {"batch_size": 4, "num_steps": 10, "device": "cpu", "precision": "fp16"})
    with pytest.raises(ParamError, match=r"train\.precision: fp16 is for CUDA GPUs, and the device here is cpu"):
        Trainer(
            "lstm",
            config("lstm", {"hidden": 8}),
            cfg,
            vocab,
            ids[:2000],
            ids[2000:2300],
            TrainPaths.for_model("lstm", tmp_path),
        )


def test_a_budget_ending_at_a_validation_point_finishes(tmp_path):
    """eval_every dividing the epoch: the last validation point is the end of training (this
    used to fail with "no training step fits in the budget")."""
    vocab = Vocab.build(list(TEXT), "char")
    ids = vocab.encode(list(TEXT))
    cfg = config("train", {"epochs": 1, "batch_size": 4, "num_steps": 10, "device": "cpu", "eval_every": 1})
    model_cfg = config("lstm", {"hidden": 8, "embedding": 4, "layers": 1, "dropout": 0.0})
    result = Trainer(
        "lstm",
        model_cfg,
        cfg,
        vocab,
        ids[:600],
        ids[600:700],
        TrainPaths.for_model("lstm", tmp_path),
        progress=False,
        log=lambda *_: None,
    ).run()
    assert result["stopped_by"] == "epochs" and result["history"][-1]["epoch"] == 1.0


# --------------------------------------------------------------------------- two ranks in-process (gloo)
def _trainer(name: str, train_updates: dict, model_updates: dict, root, **kw) -> Trainer:
    """A Trainer of a tiny model ``name`` (lstm or transformer) on TEXT; ``root`` None: no outputs."""
    vocab = Vocab.build(list(TEXT), "char")
    ids = vocab.encode(list(TEXT))
    cfg = config("train", {"epochs": 1, "batch_size": 4, "num_steps": 10, "device": "cpu", **train_updates})
    sizes = {"hidden": 8, "embedding": 4} if name == "lstm" else {}
    model_cfg = config(name, {**sizes, "layers": 1, "dropout": 0.0, **model_updates})
    paths = TrainPaths.for_model(name, Path(root)) if root is not None else None
    return Trainer(
        name, model_cfg, cfg, vocab, ids[:2000], ids[2000:2300], paths, progress=False, log=lambda *_: None, **kw
    )


def _two_rank_worker(
    rank: int, port: int, root: str, train_updates: dict, model_updates: dict, results, name: str = "lstm"
) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        world = distributed.World(rank, 2)
        trainer = _trainer(name, {"nproc": 2, **train_updates}, model_updates, root if rank == 0 else None, world=world)
        results[rank] = ("ok", trainer.run()["best_val_perplexity"])
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results[rank] = ("error", f"{type(exc).__name__}: {exc}")
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path, train_updates: dict, model_updates: dict, name: str = "lstm") -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        args = (port, str(tmp_path), train_updates, model_updates, results, name)
        mp.spawn(_two_rank_worker, args=args, nprocs=2)
        return dict(results)


def test_two_ranks_train_an_adaptive_softmax_whose_rare_cluster_one_rank_misses(tmp_path):
    """A rank's rows often hold no target of the rarest cluster, whose parameters then get no
    gradient there: DDP must be told (find_unused_parameters), or the next step fails."""
    results = run_two_ranks(tmp_path, {"max_steps": 8}, {"softmax": "adaptive", "cutoffs": [16]})
    assert results[0][0] == results[1][0] == "ok", results
    assert results[0][1] == results[1][1] < 40  # rank 0's validation, broadcast
    assert (tmp_path / "models" / "lstm.pt").exists()


def test_two_ranks_train_a_transformer_like_one_process(tmp_path):
    """The Transformer's state (the tokens read so far, batch on dim 1) splits by rows like a
    recurrent state: two ranks of 2 rows reach one process's validation perplexity on 4 rows."""
    sizes = {"d_model": 8, "heads": 2, "context": 10}
    results = run_two_ranks(tmp_path / "two", {"max_steps": 8, "precision": "fp32"}, sizes, "transformer")
    assert results[0][0] == results[1][0] == "ok", results
    one = _trainer("transformer", {"max_steps": 8, "precision": "fp32"}, sizes, tmp_path / "one").run()
    assert results[0][1] == pytest.approx(one["best_val_perplexity"], rel=1e-5)
    assert (tmp_path / "two" / "models" / "transformer.pt").exists()


def test_a_divergence_seen_by_the_ranks_is_reported_once(tmp_path):
    results = run_two_ranks(tmp_path, {"lr": 1e30, "clip_theta": 0.0, "optimizer": "sgd"}, {})
    assert results[0][0] == "error" and "RnnlmError: lstm: training diverged" in results[0][1], results
    assert results[1] == ("error", "SystemExit: 1")  # rank 1 stops without a second message
    assert not (tmp_path / "models").exists()


# --------------------------------------------------------------------------- two ranks through dvc repro
# fp32: the comparison below is to 1e-5 (precision auto would be bf16 on a CPU that has it)
DDP = {
    "train": {"epochs": 1, "eval_every": 10, "threads": 1, "precision": "fp32"},
    "lstm": {"hidden": 24, "dropout": 0.0},
}


def outputs(root: Path) -> tuple[list, dict, dict]:
    files = sorted(
        str(p.relative_to(root))
        for d in ("models", "metrics/train", "checkpoints")
        if (root / d).exists()
        for p in (root / d).rglob("*")
        if p.is_file() and "lstm" in str(p)
    )
    history = {}
    for kind in ("train", "val"):
        tsv = (root / f"metrics/train/lstm/plots/metrics/{kind}/perplexity.tsv").read_text().splitlines()[1:]
        history[kind] = [float(line.split("\t")[1]) for line in tsv]
    weights = torch.load(root / "models/lstm.last.pt", weights_only=True)["state_dict"]
    return files, history, weights


@pytest.mark.integration
def test_two_ranks_train_like_one_process(tmp_path):
    proj = make_project(tmp_path / "ddp", DDP)
    proj.repro("train@lstm")
    files1, history1, weights1 = outputs(proj.path)
    proj.set_params({"train": {"nproc": 2}})
    run = proj.repro("train@lstm")
    assert ran_stages(run.stdout) == ["train@lstm"], run.stdout  # the data stages stay as they are
    assert "2 processes" in run.stdout
    files2, history2, weights2 = outputs(proj.path)
    assert files2 == files1  # rank 1 is given no paths: what is written is rank 0's
    assert len(history1["val"]) >= 3
    for kind in ("train", "val"):
        assert np.allclose(history2[kind], history1[kind], rtol=1e-5, atol=0), kind
    for key in weights1:
        assert torch.allclose(weights2[key], weights1[key], rtol=0, atol=1e-5), key
    lock = yaml.safe_load((proj.path / "dvc.lock").read_text())
    assert lock["stages"]["train@lstm"]["params"]["params.yaml"]["train"]["nproc"] == 2


@pytest.mark.integration
def test_an_error_every_rank_meets_is_reported_once(tmp_path):
    """Divergence, seen by both ranks: rank 0 names it, rank 1 stops quietly, the stage adds one
    line pointing at it (no resume hint: rerunning the same params would diverge again)."""
    proj = make_project(
        tmp_path / "diverge",
        {**DDP, "train": {**DDP["train"], "nproc": 2, "lr": 1e30, "clip_theta": 0.0, "optimizer": "sgd"}},
    )
    proj.repro("vocab")
    run = proj.repro("train@lstm", check=False)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "lstm: training diverged" in errors[0], run.stderr
    assert errors[1].startswith("error: stages.train lstm: stopped by the error above (rank "), run.stderr
    assert "Traceback" not in run.stderr and not (proj.path / "models" / "lstm.pt").exists()


def worker_pids(project: Path) -> dict[int, int]:
    """{rank: pid} of the torchrun workers running in ``project``."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or Path(os.readlink(proc / "cwd")) != project:
                continue
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
            found[int(env["RANK"])] = int(proc.name)
    return found


def start_repro(proj, target: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(proj.env["PATH"].split(os.pathsep)[0]) / "dvc"), "repro", target],
        cwd=proj.path,
        env=proj.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)


@pytest.mark.integration
def test_ctrl_c_stops_every_rank_as_interrupted(tmp_path):
    """Ctrl-C reaches the stage that runs torchrun (the ranks are in their own sessions): it
    stops them and says `interrupted`, with no traceback; the next repro resumes."""
    proj = make_project(
        tmp_path / "int", {**DDP, "train": {**DDP["train"], "nproc": 2}, "lstm": {**DDP["lstm"], "epochs": 3}}
    )
    proj.repro("vocab")
    resume = proj.path / "checkpoints" / "lstm.resume.pt"
    proc = start_repro(proj, "train@lstm")
    try:
        wait_for(resume, proc)
        pids = worker_pids(proj.path)
        for pid in pids.values():  # hold the ranks so that the run cannot end first
            os.kill(pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGINT)
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "interrupted" in err and "Traceback" not in err, err
    assert not worker_pids(proj.path)
    assert "lstm: resuming after step" in proj.repro("train@lstm").stdout


@pytest.mark.integration
def test_killing_one_rank_stops_the_stage_and_the_next_repro_resumes(tmp_path):
    """Validation points fall inside epochs (eval_every), so the resume file holds both ranks'
    rows of the carried hidden state; the resumed run ends where an uninterrupted one does."""
    proj = make_project(
        tmp_path / "kill",
        {**DDP, "train": {**DDP["train"], "nproc": 2, "eval_every": 30}, "lstm": {**DDP["lstm"], "epochs": 3}},
    )
    proj.repro("vocab")
    resume = proj.path / "checkpoints" / "lstm.resume.pt"
    proc = start_repro(proj, "train@lstm")
    try:
        wait_for(resume, proc)  # the first validation point
        pids = worker_pids(proj.path)
        assert sorted(pids) == [0, 1]
        os.kill(pids[0], signal.SIGSTOP)  # rank 0 cannot finish the run meanwhile
        os.kill(pids[1], signal.SIGKILL)
        os.kill(pids[0], signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "error: stages.train lstm: rank 1 of 2 was killed by SIGKILL, so every rank stopped" in err, err
    assert "Traceback" not in err, err
    assert resume.exists() and not (proj.path / "models" / "lstm.pt").exists()
    run = proj.repro("train@lstm")
    resumed_at = re.search(r"lstm: resuming after step (\d+)", run.stdout)
    assert resumed_at and int(resumed_at[1]) % 30 == 0, run.stdout  # a validation point, mid-epoch
    summary = json.loads((proj.path / "metrics/train/lstm/metrics.json").read_text())
    assert summary["epochs"] == 3 and summary["stopped_by"] == "epochs" and not resume.exists()
    _, resumed, resumed_weights = outputs(proj.path)
    proj.repro("-f", "train@lstm")  # the same run, uninterrupted
    _, whole, whole_weights = outputs(proj.path)
    assert resumed == whole
    assert all(torch.equal(resumed_weights[k], whole_weights[k]) for k in whole_weights)
