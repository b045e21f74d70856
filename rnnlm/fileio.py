"""Atomic file writes (outputs appear whole or not at all), and reading another stage's outputs."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RnnlmError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # created 0666 less the umask, as open() makes any file (mkstemp's 0600 would need the umask
    # read, and reading it means setting it: a race with other threads)
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def replace_dir(staged: Path, path: Path) -> None:
    """Put directory ``staged`` in the place of ``path``, whose old content goes only now."""
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staged, path)  # a rename; a copy when the two lie on different file systems
    shutil.rmtree(old, ignore_errors=True)


def stage_output(path: Path, stage: str) -> Path:
    """``path``, an output of ``stage``; RnnlmError saying which stage to run if it is missing."""
    if not path.exists():
        raise RnnlmError(f"{path}: not found; run `dvc repro {stage}` first")
    return path


def read_stage_json(path: Path, stage: str) -> Any:
    """The JSON output ``path`` of ``stage``; RnnlmError saying to rerun it if it is unreadable."""
    try:
        return json.loads(stage_output(path, stage).read_text(encoding="utf-8"))
    except ValueError as exc:  # invalid JSON or invalid UTF-8
        raise RnnlmError(f"{path}: not valid JSON ({exc}); rerun `dvc repro {stage}`") from None
