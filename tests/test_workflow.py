"""Team workflow under real DVC (integration): experiments and the queue, sharing results through a
DVC remote, determinism, what reruns, interruption and resume, safe loading, params validation.

Three throw-away projects (see conftest.make_project) keep this file to a few minutes on 2 cores:

* ``main``: the whole pipeline, built once; also the uninterrupted reference run of the LSTM
  config that the interruption tests resume. Tests that change it put it back (git + dvc checkout).
* clones of ``main`` through a local DVC remote (team sharing, experiments, the queue).
* ``interrupt``: data stages only, then a training run stopped by a real signal.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ALL_STAGES, SHARED_DATA, VENV_BIN, Project, make_project, ran_stages

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnlm.checkpoint import load_checkpoint, load_model  # noqa: E402
from rnnlm.errors import RnnlmError  # noqa: E402

pytestmark = pytest.mark.integration

# The LSTM gets epochs long enough to interrupt one mid-run: a 64-wide LSTM trained 6 epochs in
# about 1 s on a fast CPU, before the signal landed; 256 wide and 8 epochs leave seconds of margin.
LSTM_EPOCHS = 8
UPDATES = {"lstm": {"hidden": 256, "epochs": LSTM_EPOCHS}}
RESUME = Path("checkpoints/lstm.resume.pt")


# --------------------------------------------------------------------------- helpers
def train_outputs(root: Path, model: str = "lstm") -> dict:
    """What must be identical between two runs of the same config: the metrics files (not
    metrics/timing/, which holds wall-clock numbers) and the checkpoints' tensors and metadata."""
    live = root / "metrics" / "train" / model
    files = {"metrics.json": (live / "metrics.json").read_bytes()}
    for tsv in sorted((live / "plots").rglob("*.tsv")):
        files[tsv.relative_to(live).as_posix()] = tsv.read_bytes()
    ckpts = {
        name: torch.load(root / "models" / name, map_location="cpu", weights_only=True)
        for name in (f"{model}.pt", f"{model}.last.pt")
    }
    return {"files": files, "ckpts": ckpts}


def assert_same_training(a: dict, b: dict) -> None:
    assert sorted(a["files"]) == sorted(b["files"])
    for name in a["files"]:
        assert a["files"][name] == b["files"][name], f"{name} differs"
    assert sorted(a["ckpts"]) == sorted(b["ckpts"])
    for name, ca in a["ckpts"].items():
        cb = b["ckpts"][name]
        meta_a = {k: v for k, v in ca.items() if k != "state_dict"}
        meta_b = {k: v for k, v in cb.items() if k != "state_dict"}
        assert meta_a == meta_b, f"{name}: metadata differs"
        sa, sb = ca["state_dict"], cb["state_dict"]
        assert list(sa) == list(sb), f"{name}: parameter names differ"
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}: tensor {key} differs"


def scores(results_csv: Path) -> list[dict]:
    """The rows of metrics/eval/results.csv without its wall-clock columns."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        return [
            {k: v for k, v in row.items() if k not in ("train_seconds", "tokens_per_second")}
            for row in csv.DictReader(f)
        ]


def restore(proj: Project) -> None:
    """Put a project back to its last commit: params, dvc.lock and git-tracked metrics from git
    (index included: core.autostage stages dvc.lock), cached outputs from the DVC cache."""
    proj.git("reset", "-q", "--hard", "HEAD")
    proj.git("clean", "-q", "-fd")
    proj.dvc("checkout", "--force", "-q")


def tmp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp") if ".git" not in p.relative_to(root).parts)


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid`` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # every process of the group has exited and been reaped
        pass


def interrupt_training(proj: Project, sig: int, ready, timeout: float = 240) -> SimpleNamespace:
    """Start `dvc repro train@lstm` in its own session, send ``sig`` to its process group once
    ``ready()`` is true (a completed epoch), wait until every process of the group has exited.

    No race with the training's end: ``ready()`` is checked while the whole group is stopped
    (SIGSTOP), and ``sig`` is sent before it continues, so the run cannot finish (and remove its
    resume file) between the check and the signal, however fast the CPU or slow the test."""
    cmd = [str(VENV_BIN / "dvc"), "repro", "train@lstm"]
    # A shell without job control starts background jobs with SIGINT ignored, and an ignored signal
    # stays ignored across exec (Python then installs no KeyboardInterrupt handler): give the run
    # the default disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(
        cmd,
        cwd=proj.path,
        env=proj.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            signal_group(proc.pid, signal.SIGSTOP)
            try:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    raise AssertionError(
                        f"training ended before it could be interrupted (rc {proc.returncode})\n{out}\n{err}"
                    )
                if ready():
                    signal_group(proc.pid, sig)  # handled as soon as the group continues
                    break
            finally:
                signal_group(proc.pid, signal.SIGCONT)
            if time.monotonic() > deadline:
                raise AssertionError("no epoch completed in time")
            time.sleep(0.02)
        out, err = proc.communicate(timeout=120)
        deadline = time.monotonic() + 60
        while group_alive(proc.pid):  # the stage may outlive a dvc killed by SIGTERM
            assert time.monotonic() < deadline, "the interrupted stage did not exit"
            time.sleep(0.05)
    finally:
        if group_alive(proc.pid):
            signal_group(proc.pid, signal.SIGKILL)
    return SimpleNamespace(rc=proc.returncode, out=out, err=err)


def exp_show(proj: Project) -> dict:
    """{name: {"params": params.yaml, "metrics": {path: data}}} from `dvc exp show --json`, for the
    baselines (by branch name) and every experiment (by experiment name)."""
    rows = {}

    def add(entry):
        data = entry["data"]
        rows[entry.get("name") or entry["rev"]] = {
            "params": data["params"]["params.yaml"]["data"],
            "metrics": {path: m.get("data", {}) for path, m in data["metrics"].items()},
        }

    for base in json.loads(proj.dvc("exp", "show", "--json").stdout):
        add(base)
        for exp in base.get("experiments") or []:
            for rev in exp["revs"]:
                add(rev)
    return rows


def experiment_name(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("Ran experiment(s): "))
    return line.split(": ", 1)[1].strip()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def main(tmp_path_factory) -> SimpleNamespace:
    proj = make_project(tmp_path_factory.mktemp("workflow") / "main", UPDATES)
    first = proj.repro()
    assert sorted(ran_stages(first.stdout)) == sorted(ALL_STAGES)
    proj.commit("built")
    return SimpleNamespace(proj=proj, reference=train_outputs(proj.path))


@pytest.fixture(scope="module")
def remote(main, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remote") / "dvc-store"
    main.proj.dvc("remote", "add", "-d", "shared", str(path))
    main.proj.commit("add the shared DVC remote")
    return path


def publish(main_proj: Project) -> None:
    """What a team member does before others can pull: results up to date, committed, pushed."""
    main_proj.repro()
    main_proj.commit("results")
    main_proj.dvc("push")


def clone(main_proj: Project, dest: Path) -> Project:
    main_proj.run("git", "clone", "-q", str(main_proj.path), str(dest))
    proj = Project(dest)
    proj.dvc("pull")
    return proj


# --------------------------------------------------------------------------- 1. experiments
@pytest.fixture(scope="module")
def exp_clone(main, remote, tmp_path_factory) -> Project:
    """A teammate's clone of ``main`` to run experiments in."""
    publish(main.proj)
    return clone(main.proj, tmp_path_factory.mktemp("experiments") / "clone")


def test_experiment_run_show_and_plots_diff(exp_clone, tmp_path):
    proj = exp_clone
    out = proj.dvc("exp", "run", "-S", "lstm.hidden=12", "-S", "train.epochs=2").stdout
    # train.epochs is already 2: only the LSTM and what reads its model rerun.
    assert sorted(ran_stages(out)) == sorted(["check-params", "train@lstm", "evaluate", "sample", "report"])
    name = experiment_name(out)

    rows = exp_show(proj)
    assert {"main", name} <= set(rows)
    metric_files = set(rows[name]["metrics"])  # scores only: no wall times, statistics or training summaries
    assert metric_files == {"metrics/eval.json"}
    base, exp = rows["main"], rows[name]
    assert exp["params"]["lstm"]["hidden"] == 12 and exp["params"]["train"]["epochs"] == 2
    assert base["params"]["lstm"]["hidden"] == UPDATES["lstm"]["hidden"]
    for row in (base, exp):  # test perplexities of every model are columns of both rows
        for m in ("rnn", "lstm", "gru"):
            assert row["metrics"]["metrics/eval.json"]["models"][m]["test"]["perplexity"] > 1
    ppl = lambda row, m: row["metrics"]["metrics/eval.json"]["models"][m]["test"]["perplexity"]  # noqa: E731
    assert ppl(exp, "lstm") != ppl(base, "lstm")
    assert ppl(exp, "gru") == ppl(base, "gru")  # untouched model, same numbers
    assert (
        exp["metrics"]["metrics/eval.json"]["models"]["lstm"]["params"]
        < base["metrics"]["metrics/eval.json"]["models"]["lstm"]["params"]
    )

    plots = json.loads(proj.dvc("plots", "diff", "main", name, "--json", "-o", str(tmp_path / "plots")).stdout)
    # each curve is rendered once: declared at the top level, not again per training stage, and
    # the evaluate stage's PNG of the same curves (the HTML report's copy) is not a DVC plot
    assert sorted(plots["data"]) == sorted(
        [
            "Validation perplexity by optimizer step",
            "Training perplexity by optimizer step",
            "Learning rate",
            "metrics/eval/test_perplexity.png",
        ]
    )
    curves = plots["data"]["Validation perplexity by optimizer step"]
    assert len(curves) == 1 and curves[0]["revisions"] == ["main", name]
    values = curves[0]["content"]["data"]["values"]
    lstm = {
        rev: [float(v["perplexity"]) for v in values if v["rev"] == rev and v["filename"].startswith("lstm/")]
        for rev in ("main", name)
    }
    assert len(lstm["main"]) == len(lstm[name]) == LSTM_EPOCHS  # both revisions' curves, overlaid
    assert lstm["main"] != lstm[name]
    assert not (proj.path / "dvc_plots").exists()


def test_a_temporary_experiment_finds_the_mirror_beside_the_workspace(main):
    """Issue 14 item 5: `dvc exp run --temp` runs in <root>/.dvc/tmp/exps/..., where the default
    relative mirror (../shared/data) resolved to nothing and the run went to the network."""
    proj = main.proj
    mirror = proj.path.parent / "tm-mirror"
    mirror.mkdir(exist_ok=True)
    shutil.copy2(SHARED_DATA / "timemachine.txt", mirror / "timemachine.txt")
    try:
        run = proj.dvc("exp", "run", "--temp", "-S", "download.mirrors=[../tm-mirror]", "download")
        assert "from ../tm-mirror/timemachine.txt" in run.stdout, run.stdout + run.stderr
        name = experiment_name(run.stdout)
        proj.dvc("exp", "remove", name)
    finally:
        restore(proj)


def stop_queue_workers(proj: Project) -> None:
    """Kill whatever queue worker is left. DVC 3.67's workers race when two of them find the
    queue empty at once: one may hang in its shutdown for good after every task has succeeded."""
    for pid_file in (proj.path / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        try:
            group = os.getpgid(int(pid_file.read_text().split()[0]))
            if group != os.getpgrp():  # the worker and the daemon that waits on it, never pytest
                os.killpg(group, signal.SIGKILL)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            pass


def test_queued_grid_runs_with_one_thread_per_worker(exp_clone):
    proj = exp_clone
    restore(proj)  # queued runs start from HEAD plus the workspace's changes: none
    assert proj.params()["train"]["threads"] == 1  # 2 workers x 1 torch thread = 2 cores
    grid = (8, 10)
    started = time.monotonic()
    # one command queues the grid (one experiment per value); the target keeps each queued run short
    out = proj.dvc(
        "exp", "run", "--queue", "train@lstm", "-S", "lstm.hidden=" + ",".join(map(str, grid)), "-S", "lstm.epochs=1"
    ).stdout
    names = re.findall(r"Queued experiment '([^']+)'", out)
    assert len(names) == len(grid), out
    try:
        proj.dvc("queue", "start", "-j", "2")
        # Wait for each experiment's git ref (cheap to poll; `dvc queue status` costs a second of CPU),
        # then for the queue to report the tasks finished.
        deadline = time.monotonic() + 420
        polls = 0
        while True:
            refs = proj.git("for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
            if set(names) <= {ref.rsplit("/", 1)[-1] for ref in refs}:
                status = proj.dvc("queue", "status").stdout
                if not any(
                    n in line and ("Running" in line or "Queued" in line) for n in names for line in status.splitlines()
                ):
                    break
            elif polls % 20 == 19:
                status = proj.dvc("queue", "status").stdout
                assert "Failed" not in status, status
            assert time.monotonic() < deadline, "the queued experiments did not finish"
            polls += 1
            time.sleep(1)
    finally:
        proj.dvc("queue", "stop", check=False)
        stop_queue_workers(proj)
    elapsed = time.monotonic() - started
    for name in names:
        assert any(
            line.split()[1:2] == [name] and line.split()[-1] == "Success"
            for line in status.splitlines()
            if len(line.split()) >= 3
        ), status
    log = proj.dvc("queue", "logs", names[0]).stdout
    assert ran_stages(log) == ["train@lstm"], log  # a targeted run: check-params is not upstream
    rows = exp_show(proj)
    # DVCLive's training summary is a plain git-tracked output (eval.json alone is a DVC metric):
    # read it from each experiment's commit.
    refs = {
        ref.rsplit("/", 1)[-1]: ref
        for ref in proj.git("for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    }
    summary = lambda rev: json.loads(proj.git("show", f"{rev}:metrics/train/lstm/metrics.json").stdout)  # noqa: E731
    base_ppl = summary("main")["val"]["perplexity"]
    by_hidden = {rows[n]["params"]["lstm"]["hidden"]: n for n in names}
    assert sorted(by_hidden) == list(grid)
    ppls = set()
    for name in by_hidden.values():
        row = rows[name]
        assert row["params"]["lstm"]["epochs"] == 1 and row["params"]["train"]["threads"] == 1
        train = summary(refs[name])
        assert train["epochs"] == 1 and train["val"]["perplexity"] > 1
        ppls.add(train["val"]["perplexity"])
    assert len(ppls) == len(grid) and base_ppl not in ppls
    print(f"queued grid of {len(grid)} (train@lstm) with -j 2: {elapsed:.0f}s")


# --------------------------------------------------------------------------- 2. team sharing
def test_results_pushed_to_a_remote_are_pulled_by_a_fresh_clone_without_retraining(main, remote, tmp_path):
    publish(main.proj)
    assert main.proj.git("ls-files", "dvc.lock").stdout.strip() == "dvc.lock"
    assert main.proj.git("status", "--porcelain").stdout == ""
    assert any(remote.rglob("*")), "dvc push stored nothing in the remote"

    proj = clone(main.proj, tmp_path / "teammate")
    for out in ("models/lstm.pt", "data/vocab.json", "data/tokens/train.npy", "reports/report.html"):
        assert (proj.path / out).read_bytes() == (main.proj.path / out).read_bytes(), out
    assert "Data and pipelines are up to date." in proj.dvc("status").stdout
    assert json.loads(proj.dvc("metrics", "show", "--json").stdout) == json.loads(
        main.proj.dvc("metrics", "show", "--json").stdout
    )
    shown = proj.dvc("metrics", "show").stdout
    assert shown == main.proj.dvc("metrics", "show").stdout and "metrics/eval.json" in shown
    again = proj.repro()
    assert ran_stages(again.stdout) == [], again.stdout
    assert proj.git("status", "--porcelain").stdout == ""


def test_an_experiment_is_shared_through_git_and_dvc_remotes_without_retraining(main, remote, tmp_path):
    """`dvc exp push` in one clone, `dvc exp pull` in another: the teammate sees the experiment
    with its metrics in `dvc exp show` and `dvc exp apply` restores its outputs from the DVC
    remote; nothing is trained in the second clone."""
    publish(main.proj)
    bare = tmp_path / "team.git"
    main.proj.run("git", "clone", "-q", "--bare", str(main.proj.path), str(bare))
    alice, bob = (clone(Project(bare), tmp_path / name) for name in ("alice", "bob"))
    out = alice.dvc("exp", "run", "-S", "lstm.hidden=20").stdout
    name = experiment_name(out)
    alice.dvc("exp", "push", "origin", name)

    listed = bob.dvc("exp", "list", "--all-commits", "origin").stdout
    assert name in listed, listed
    bob.dvc("exp", "pull", "origin", name)
    rows = exp_show(bob)
    assert rows[name]["params"]["lstm"]["hidden"] == 20
    alice_eval = json.loads((alice.path / "metrics/eval.json").read_text())
    assert rows[name]["metrics"]["metrics/eval.json"]["models"]["lstm"] == alice_eval["models"]["lstm"]
    applied = bob.dvc("exp", "apply", name)
    assert "Running stage" not in applied.stdout + applied.stderr
    assert "Data and pipelines are up to date." in bob.dvc("status").stdout
    for out in ("models/lstm.pt", "metrics/eval.json", "samples/lstm.txt"):
        assert (bob.path / out).read_bytes() == (alice.path / out).read_bytes(), out
    assert bob.params()["lstm"]["hidden"] == 20


def test_a_model_fetched_with_dvc_works_alone_outside_the_repository(main, tmp_path):
    """`dvc get` / `dvc artifacts get` a model file, then the `rnnlm` command on it alone: the
    sample stage's text for the same seed, and the evaluate stage's val perplexity."""
    proj, p = main.proj, main.proj.path
    away = tmp_path / "away"
    away.mkdir()
    cli = [str(VENV_BIN / "rnnlm")]
    proj.run(str(VENV_BIN / "dvc"), "get", str(p), "models/lstm.pt", "-o", str(away / "lstm.pt"))
    proj.run(str(VENV_BIN / "dvc"), "get", str(p), "data/heldout/val.txt", "-o", str(away / "val.txt"))
    length = proj.params()["sample"]["length"]
    run = subprocess.run(
        cli + ["sample", "--model", "lstm.pt", "--prefix", "time traveller", "--length", str(length)],
        cwd=away,
        capture_output=True,
        text=True,
        check=True,
    )
    stage_text = (p / "samples/lstm.txt").read_text(encoding="utf-8").split("\n")
    assert run.stdout.rstrip("\n") == stage_text[stage_text.index('--- prefix 1/1: "time traveller"') + 1]
    run = subprocess.run(
        cli + ["score", "--model", "lstm.pt", "val.txt"], cwd=away, capture_output=True, text=True, check=True
    )
    scored = float(re.search(r"perplexity ([0-9.]+)", run.stdout).group(1))
    evaluated = json.loads((p / "metrics/eval.json").read_text())["models"]["lstm"]["val"]["perplexity"]
    assert scored == pytest.approx(evaluated, rel=1e-4)
    info = subprocess.run(cli + ["info", "--model", "lstm.pt"], cwd=away, capture_output=True, text=True, check=True)
    assert "corpus:      timemachine" in info.stdout and "model:       lstm (lstm" in info.stdout

    proj.git("tag", "-a", "lstm@v0.1.0", "-m", "lstm v0.1.0")  # a registered version (GTO tag)
    try:
        proj.run(str(VENV_BIN / "dvc"), "artifacts", "get", str(p), "lstm", "-o", str(away / "tagged.pt"))
        assert (away / "tagged.pt").read_bytes() == (p / "models/lstm.pt").read_bytes()
    finally:
        proj.git("tag", "-d", "lstm@v0.1.0")


# --------------------------------------------------------------------------- 3. determinism
def test_forced_rerun_gives_identical_metrics_and_weights(main):
    proj, p = main.proj, main.proj.path
    before = train_outputs(p)
    data_before = {f: (p / f).read_bytes() for f in ("data/vocab.json", "data/tokens/train.npy", "metrics/eval.json")}
    results_before = scores(p / "metrics/eval/results.csv")
    try:
        out = proj.repro("-f", "train@lstm")
        assert ran_stages(out.stdout) == ["code", "download", "clean", "vocab", "train@lstm"]
        out = proj.repro("-f", "-s", "evaluate")
        assert ran_stages(out.stdout) == ["evaluate"]
        assert_same_training(before, train_outputs(p))
        for f, content in data_before.items():
            assert (p / f).read_bytes() == content, f"{f} differs"
        assert scores(p / "metrics/eval/results.csv") == results_before
    finally:
        restore(proj)


# --------------------------------------------------------------------------- 4. what reruns
def test_changing_the_corpus_reruns_everything_downstream(main):
    """Also: a local corpus (in data/corpora, the download stage's dependency) is tracked by
    content: touching it reruns nothing; editing it in place reruns the pipeline from download."""
    proj, p = main.proj, main.proj.path
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:40000]
    corpus = p / "data" / "corpora" / "my-corpus.txt"
    try:
        proj.set_params({"clean": {"max_chars": 11000}})
        out = proj.repro("vocab")  # the data stages: download is not rerun
        assert ran_stages(out.stdout) == ["clean", "vocab"]
        assert len((p / "data/clean/corpus.txt").read_text()) == 11000

        corpus.write_text(text, encoding="utf-8")
        proj.set_params({"download": {"corpus": "data/corpora/my-corpus.txt"}})
        out = proj.repro()
        assert sorted(ran_stages(out.stdout)) == sorted(s for s in ALL_STAGES if s != "code")  # code: same code
        source = json.loads((p / "data/raw/source.json").read_text())
        assert source["kind"] == "path" and (p / "data/raw/corpus.txt").read_text(encoding="utf-8") == text

        later = corpus.stat().st_mtime + 3600
        os.utime(corpus, (later, later))  # touched: the same bytes
        readme = p / "data" / "corpora" / "README.md"  # in .dvcignore: not part of the dependency
        readme.write_text(readme.read_text() + "A note.\n")
        assert "Data and pipelines are up to date." in proj.dvc("status").stdout
        assert ran_stages(proj.repro().stdout) == []

        corpus.write_text("Edited. " + text, encoding="utf-8")  # edited in place, same path and params
        status = proj.dvc("status").stdout
        assert "download:" in status and "modified:           data/corpora" in status, status
        out = proj.repro("vocab")  # (the full rerun from here on is shown above, for a new corpus)
        assert ran_stages(out.stdout) == ["download", "clean", "vocab"]
        assert (p / "data/clean/corpus.txt").read_text(encoding="utf-8").startswith("edited ")  # clean.mode letters
        status = "\n" + proj.dvc("status").stdout  # what the next repro reruns: everything downstream
        for stage in ("train@rnn", "train@lstm", "train@gru", "evaluate", "sample"):
            assert f"\n{stage}:\n\tchanged deps:\n\t\tmodified:           data/" in status, status
    finally:
        restore(proj)
    assert "Data and pipelines are up to date." in proj.dvc("status").stdout


# --------------------------------------------------------------------------- 5. interruption
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> SimpleNamespace:
    """A run of train@lstm stopped with SIGINT after its first completed epoch(s); the project's
    state right after it is recorded here, before later steps change it."""
    tmp = tmp_path_factory.mktemp("interrupt")
    proj = make_project(tmp / "proj", UPDATES)
    proj.repro("vocab")
    resume = proj.path / RESUME
    run = interrupt_training(proj, signal.SIGINT, ready=resume.exists)
    saved = tmp / "lstm.resume.P.pt"
    shutil.copy2(resume, saved)
    best = proj.path / "models/lstm.pt"
    return SimpleNamespace(
        proj=proj,
        run=run,
        saved_resume=saved,
        resume_ckpt=load_checkpoint(resume),
        tmp_files=tmp_files(proj.path),
        best_exists=best.exists(),
        best_loads=best.exists() and load_checkpoint(best)["step"] >= 1,
        status=proj.dvc("status", "train@lstm").stdout,
    )


def test_interrupted_training_leaves_no_corrupt_outputs(interrupted):
    it = interrupted
    assert it.run.rc != 0, it.run.out
    assert "interrupted" in it.run.err and "Traceback" not in it.run.err, it.run.err
    assert it.tmp_files == []
    assert not it.best_exists or it.best_loads
    assert 1 <= it.resume_ckpt["position"]["epoch"] < LSTM_EPOCHS and it.resume_ckpt["position"]["batch"] == 0
    assert "train@lstm" in it.status and "up to date" not in it.status  # not mistaken for a finished run


@pytest.fixture(scope="module")
def resumed(interrupted) -> SimpleNamespace:
    out = interrupted.proj.repro("train@lstm")
    return SimpleNamespace(out=out.stdout + out.stderr, ran=ran_stages(out.stdout))


def test_rerun_resumes_and_matches_an_uninterrupted_run(interrupted, resumed, main):
    n, step = interrupted.resume_ckpt["position"]["epoch"], interrupted.resume_ckpt["step"]
    assert resumed.ran == ["train@lstm"]
    assert f"lstm: resuming after step {step} (from {RESUME})" in resumed.out
    assert f"(epoch {n}.00):" not in resumed.out  # completed epochs are not trained again
    assert f"(epoch {n + 1}.00):" in resumed.out
    assert not (interrupted.proj.path / RESUME).exists()  # deleted on completion
    # the same config trained without interruption in another copy of the project
    assert_same_training(main.reference, train_outputs(interrupted.proj.path))


def test_resume_state_from_other_params_is_ignored(interrupted, resumed):
    proj, p = interrupted.proj, interrupted.proj.path
    proj.set_params({"lstm": {"epochs": 4, "hidden": 320}})  # other params, long enough to interrupt
    resume = p / RESUME
    shutil.copy2(interrupted.saved_resume, resume)  # saved by the 6-epoch run
    stale_inode = resume.stat().st_ino

    run = interrupt_training(
        proj, signal.SIGTERM, ready=lambda: resume.exists() and resume.stat().st_ino != stale_inode
    )
    assert "lstm: resume state is for other params, data or code; starting over" in run.out
    assert "resuming after" not in run.out and "(epoch 1.00):" in run.out
    assert run.rc != 0 and "interrupted" in run.err and "Traceback" not in run.err
    assert tmp_files(p) == []
    fresh = load_checkpoint(resume)
    assert fresh["fingerprint"] != interrupted.resume_ckpt["fingerprint"] and 1 <= fresh["position"]["epoch"] < 4

    out = proj.repro("train@lstm").stdout
    assert f"lstm: resuming after step {fresh['step']}" in out
    summary = json.loads((p / "metrics/train/lstm/metrics.json").read_text())
    assert summary["epochs"] == 4
    per_epoch = summary["steps"] // 4
    steps = (p / "metrics/train/lstm/plots/metrics/val/perplexity.tsv").read_text().split("\n")[1:]
    assert [row.split("\t")[0] for row in steps if row] == [str(per_epoch * e) for e in (1, 2, 3, 4)]
    assert not resume.exists()


# --------------------------------------------------------------------------- 6. safe loading
class _RunsCode:
    """Unpickling this calls exec(): what a tampered checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"format": "rnnlm-checkpoint", "version": 1, "state_dict": {}, "payload": _RunsCode(marker)}, path)

    with pytest.raises(RnnlmError, match="not a loadable rnnlm checkpoint"):
        load_checkpoint(path)
    with pytest.raises(RnnlmError):
        load_model(path)
    assert not marker.exists()

    # control: the file really runs code when unpickled without weights_only (in a child process)
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert marker.read_text() == "pwned"


def test_training_ignores_a_resume_file_that_would_run_code(main, tmp_path):
    """The resume path loads with weights_only too: a tampered resume file means starting over."""
    from rnnlm.params import load_model_config
    from rnnlm.train import Trainer, TrainPaths
    from rnnlm.vocab import Vocab, load_splits

    p = main.proj.path
    model_cfg, cfg = load_model_config("lstm", p / "params.yaml")
    cfg = dataclasses.replace(cfg, epochs=1)
    splits = load_splits(p / "data/tokens")
    paths = TrainPaths.for_model("lstm", tmp_path)
    paths.resume.parent.mkdir(parents=True)
    marker = tmp_path / "marker"
    torch.save({"format": "rnnlm-checkpoint", "version": 1, "epoch": 1, "payload": _RunsCode(marker)}, paths.resume)
    logs: list[str] = []
    result = Trainer(
        "lstm",
        model_cfg,
        cfg,
        Vocab.load(p / "data/vocab.json"),
        splits["train"],
        splits["val"],
        paths,
        progress=False,
        log=logs.append,
    ).run()
    assert any("ignoring unreadable resume state" in line for line in logs), logs
    assert not any("resuming after" in line for line in logs)
    assert not marker.exists()
    assert [row["epoch"] for row in result["history"]] == [1]
    assert load_checkpoint(paths.best)["step"] == result["history"][0]["step"] and not paths.resume.exists()


def test_truncated_checkpoint_gives_a_clear_error(main, tmp_path):
    data = (main.proj.path / "models/lstm.pt").read_bytes()
    path = tmp_path / "lstm.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RnnlmError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg


def test_vocabulary_and_metadata_are_json_and_no_pickles_are_written(main):
    p = main.proj.path
    vocab = json.loads((p / "data/vocab.json").read_text(encoding="utf-8"))
    assert vocab["size"] == len(vocab["tokens"])
    for f in ("data/raw/source.json", "metrics/corpus.json", "metrics/eval.json"):
        json.loads((p / f).read_text(encoding="utf-8"))
    files = [f for f in p.rglob("*") if f.is_file() and not {".git", ".dvc"} & set(f.relative_to(p).parts)]
    assert not [f for f in files if f.suffix in (".pkl", ".pickle")]
    for pt in (p / "models").glob("*.pt"):  # plain tensors and metadata only
        assert torch.load(pt, map_location="cpu", weights_only=True)["format"] == "rnnlm-checkpoint"


def test_a_misspelled_section_fails_the_experiment(main):
    """Issue 14 item 4: `-S +lstn.hidden=12` added a section no stage reads; the run exited 0,
    reran nothing and recorded an experiment. check-params reads the whole file."""
    proj = main.proj
    try:
        run = proj.dvc("exp", "run", "-S", "+lstn.hidden=12", check=False)
        assert run.returncode != 0, run.stdout
        assert ran_stages(run.stdout) == ["check-params"]
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert errors == ["error: params.yaml: lstn: unknown section; did you mean lstm?"], run.stderr
        assert "Traceback" not in run.stderr + run.stdout
    finally:
        restore(proj)


# --------------------------------------------------------------------------- 7. params validation
@pytest.mark.parametrize(
    "updates,stage,expected,output",
    [
        ({"lstm": {"hiden": 12}}, "train@lstm", ["lstm.hiden", "lstm.hidden"], "models/lstm.pt"),
        ({"train": {"optimizer": "adamm"}}, "train@lstm", ["train.optimizer", "'adamm'", "'adam'"], "models/lstm.pt"),
        ({"vocab": {"split": [0.9, 0.2, 0.1]}}, "vocab", ["vocab.split", "must sum to 1"], "data/vocab.json"),
    ],
    ids=["unknown-key", "bad-choice", "split-sum"],
)
def test_invalid_params_fail_the_stage_with_one_clear_error(main, updates, stage, expected, output):
    proj = main.proj
    live = proj.path / "metrics/train/lstm"
    metrics_before = {p: p.read_bytes() for p in live.rglob("*") if p.is_file()}
    try:
        proj.set_params(updates)
        run = proj.repro(stage, check=False)
        assert run.returncode != 0
        assert ran_stages(run.stdout) == [stage]
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, run.stderr
        for text in expected:
            assert text in errors[0], errors[0]
        assert "Traceback" not in run.stderr + run.stdout
        assert not (proj.path / output).exists()
        # a failed training run keeps the last run's metrics (persist outputs, replaced whole at the end)
        assert (
            len(metrics_before) >= 3 and {p: p.read_bytes() for p in live.rglob("*") if p.is_file()} == metrics_before
        )
    finally:
        restore(proj)
