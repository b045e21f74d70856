"""Checkpoints: plain tensors and JSON-able metadata, saved atomically, loaded with weights_only.

A checkpoint is a dict ``{"format": "rnnlm-checkpoint", "version": 2, "name": "lstm",
"model_config": ..., "vocab": <Vocab.to_dict(): tokens, level, tokenizer, the corpus and its
cleaning>, "vocab_fingerprint": ..., "state_dict": ..., "step": ..., "val_perplexity": ...}``:
a model file is self-contained (:func:`load_packaged` needs nothing beside it). Loading never
unpickles arbitrary objects (``torch.load(..., weights_only=True)``), so a tampered file cannot
run code; a truncated, foreign or old-style file gives one clear error.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .errors import RnnlmError
from .fileio import write_bytes
from .models import RNNLM
from .vocab import Vocab

FORMAT = "rnnlm-checkpoint"
VERSION = 2  # 2: the vocabulary travels inside the file


def cpu_state_dict(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def model_files(root: Path, models) -> dict[str, Path]:
    """``models/<name>.pt`` of each model, every one checked to exist before any slow work."""
    paths = {m: Path(root) / "models" / f"{m}.pt" for m in models}
    for m, path in paths.items():
        if not path.exists():
            raise RnnlmError(f"{path}: checkpoint not found; run `dvc repro train@{m}` first")
    return paths


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (the old file stays whole on any failure). It is
    serialised in memory first: torch names the archive's records "archive/...", so equal
    checkpoints are byte-identical files, and a failed write is a plain OSError (a full disk says
    so, instead of torch's zip writer failing on "unexpected pos")."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    try:
        write_bytes(path, buffer.getbuffer())
    except OSError as exc:
        raise RnnlmError(f"{path}: cannot write the checkpoint: {exc.strerror or exc}") from None


REDO = "; delete it and rerun its training stage (dvc repro train@<model>)"  # for the pipeline's own files
# What every model file holds beside its tensors, and what the tools read from it.
METADATA = {
    "name": str,
    "model_config": dict,
    "state_dict": dict,
    "vocab_fingerprint": str,
    "step": int,
    "val_perplexity": float,
}


def load_checkpoint(path: str | os.PathLike, own: bool = False) -> dict:
    """A checkpoint's payload, loaded without running code and checked. ``own``: the file is one of
    the pipeline's outputs, so an error advises rerunning the stage that writes it."""
    path = Path(path)
    redo = REDO if own else ""
    if not path.exists():
        raise RnnlmError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise RnnlmError(f"{path}: a directory, not a model file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, disallowed global, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RnnlmError(
            f"{path}: not a loadable rnnlm checkpoint (truncated, corrupt or unsafe: {first[:200]}){redo}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise RnnlmError(f"{path}: not an rnnlm checkpoint (missing format marker)")
    if ckpt.get("version") == 1:
        raise RnnlmError(
            f"{path}: an old-style model file (format version 1, without its vocabulary); "
            "retrain it with the current code (dvc repro train@<model>)"
        )
    if ckpt.get("version") != VERSION:
        raise RnnlmError(f"{path}: checkpoint version {ckpt.get('version')!r}, expected {VERSION}")
    for key, kind in METADATA.items():
        value = ckpt.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number if kind is float else isinstance(value, kind) and not isinstance(value, bool)):
            got = "missing" if key not in ckpt else f"{type(value).__name__} {str(value)[:40]!r}"
            raise RnnlmError(f"{path}: a malformed model file: {key} is {got}, expected {kind.__name__}{redo}")
    return ckpt


def load_model(
    path: str | os.PathLike,
    vocab_fingerprint: str | None = None,
    device="cpu",
    ckpt: dict | None = None,
    own: bool = False,
) -> tuple[RNNLM, dict]:
    """Rebuild the model stored in a checkpoint; refuse one trained on another vocabulary.
    ``own``: as for :func:`load_checkpoint`."""
    ckpt = load_checkpoint(path, own) if ckpt is None else ckpt
    if vocab_fingerprint is not None and ckpt.get("vocab_fingerprint") != vocab_fingerprint:
        raise RnnlmError(f"{path}: trained on a different vocabulary than data/vocab.json; rerun its training stage")
    try:
        model = RNNLM(**ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise RnnlmError(f"{path}: checkpoint does not match its model config: {str(exc)[:200]}") from None
    return model.to(device), ckpt


def load_packaged(path: str | os.PathLike, device="cpu") -> tuple[RNNLM, Vocab, dict]:
    """(model, its vocabulary, the checkpoint) from a model file alone."""
    ckpt = load_checkpoint(path)
    try:
        vocab = Vocab.from_dict(ckpt["vocab"])
    except (KeyError, TypeError) as exc:
        raise RnnlmError(f"{path}: checkpoint has no usable vocabulary ({exc})") from None
    except RnnlmError as exc:
        raise RnnlmError(f"{path}: {exc}") from None
    model, ckpt = load_model(path, vocab.fingerprint, device, ckpt=ckpt)
    return model, vocab, ckpt
