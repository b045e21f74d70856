"""Shared fixtures: a copy of the project in a temporary git repository, driven by real DVC."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """The corpus mirror the tests read (no test uses the network): $RNNLM_MIRROR, else
    ../shared/data beside this checkout, else beside the repository it was cloned from (a clone
    made elsewhere, e.g. `git clone . /tmp/x`)."""
    if os.environ.get("RNNLM_MIRROR"):
        return Path(os.environ["RNNLM_MIRROR"]).resolve()
    beside = ROOT.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    return Path(origin).resolve().parent / "shared" / "data" if origin and Path(origin).is_dir() else beside


SHARED_DATA = _shared_data()
VENV_BIN = Path(sys.executable).parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "rnnlm", "stages", "data/corpora"]

# A configuration small enough that the whole pipeline runs in seconds on 2 cores.
TINY = {
    "download": {"mirrors": [str(SHARED_DATA)]},
    "clean": {"max_chars": 12000},
    "train": {
        "epochs": 2,
        "batch_size": 8,
        "num_steps": 16,
        "lr": 0.01,
        "threads": 1,
        "device": "cpu",
        "lr_decay": 1.0,
    },
    "rnn": {"hidden": 16, "embedding": 8, "dropout": 0.0},
    "lstm": {"hidden": 16, "embedding": 8, "dropout": 0.0},
    "gru": {"hidden": 16, "embedding": 8, "dropout": 0.0},
    "transformer": {"d_model": 16, "layers": 1, "heads": 2, "context": 16, "num_steps": 16, "dropout": 0.0},
    "evaluate": {"ngram_order": 3, "device": "cpu"},
    "sample": {"length": 20, "device": "cpu"},
}


def deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


class Project:
    """A throw-away git + DVC repository holding a copy of this project."""

    def __init__(self, path: Path):
        self.path = path
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "DVC_NO_ANALYTICS": "1",
            "OMP_NUM_THREADS": "1",
        }

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        # Output goes through files, not pipes: a daemon the command leaves behind (`dvc queue start`
        # forks workers that keep its stdout) cannot hold the call open until that daemon exits.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(list(args), cwd=self.path, env=self.env, stdout=out, stderr=err, timeout=timeout)
            out.seek(0), err.seek(0)
            proc.stdout, proc.stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def dvc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(str(VENV_BIN / "dvc"), *args, **kw)

    def git(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("git", *args, **kw)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, updates: dict) -> None:
        (self.path / "params.yaml").write_text(
            yaml.safe_dump(deep_update(self.params(), updates), sort_keys=False, allow_unicode=True)
        )

    def commit(self, message: str = "update") -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message, "--allow-empty")

    def repro(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.dvc("repro", *args, **kw)


def ran_stages(output: str) -> list[str]:
    """Stage names that `dvc repro` / `dvc exp run` actually executed, from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def make_project(dest: Path, updates: dict | None = None) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    proj = Project(dest)
    proj.git("init", "-q", "-b", "main")
    proj.dvc("init", "-q")
    proj.dvc("config", "core.analytics", "false")
    proj.dvc("config", "core.autostage", "true")
    proj.set_params(deep_update(yaml.safe_load(yaml.safe_dump(TINY)), updates or {}))
    proj.commit("initial")
    return proj


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process torch work in tests uses one thread: tests never oversubscribe the 2 cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_project(tmp_path) -> Project:
    return make_project(tmp_path / "proj")


# every stage of the default pipeline, as `dvc repro` names them
ALL_STAGES = [
    "code",
    "check-params",
    "download",
    "clean",
    "vocab",
    "train@rnn",
    "train@lstm",
    "train@gru",
    "train@transformer",
    "evaluate",
    "sample",
    "report",
]


def tiny_model(cell: str, vocab_size: int, width: int = 8, dropout: float = 0.0):
    """A small model of ``cell`` (rnn, lstm, gru: one torch layer of ``width``, embedding
    ``width // 2``; transformer: one block of ``width``, 2 heads, context 16)."""
    from rnnlm.models import build

    if cell == "transformer":
        sizes = dict(d_model=width, layers=1, heads=2, context=16, tie_weights=True, softmax="full", cutoffs=[])
    else:
        sizes = dict(impl="torch", hidden=width, layers=1, embedding=width // 2)
    return build(dict(cell=cell, vocab_size=vocab_size, dropout=dropout, **sizes))


def save_model_file(path, model, vocab, name: str, step: int, val_perplexity: float, **extra) -> None:
    """``model`` saved as the train stage saves a model file (``extra``: more keys, e.g. precision)."""
    from rnnlm.checkpoint import cpu_state_dict, save_checkpoint

    save_checkpoint(
        path,
        {
            "model_config": dict(model.config),
            "vocab_fingerprint": vocab.fingerprint,
            "vocab_size": len(vocab),
            "state_dict": cpu_state_dict(model),
            "name": name,
            "step": step,
            "val_perplexity": val_perplexity,
            **extra,
        },
    )


def config(name: str, updates: dict | None = None):
    """Section ``name`` of the committed params.yaml (which holds every default) with ``updates``
    applied, as its validated config object (a ModelConfig for rnn/lstm/gru)."""
    from rnnlm.params import validate_section

    return validate_section(name, {**(committed_params().get(name) or {}), **(updates or {})})


@functools.cache
def committed_params() -> dict:
    """This checkout's params.yaml (read once)."""
    from rnnlm.params import read_params

    return read_params(ROOT / "params.yaml")


def run_stage_script(
    name: str, cwd: Path, env: dict | None = None, timeout: float = 300, args: list[str] = ()
) -> subprocess.CompletedProcess:
    """Stage script ``stages/<name>.py`` of this checkout run as dvc.yaml runs it (``python -m
    stages.<name> args``) in ``cwd``, a project root holding params.yaml and data/."""
    # one torch thread unless ``env`` says otherwise: make test runs two test modules side by side
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
