"""Checkpoints: plain tensors and JSON-able metadata, saved atomically, loaded with weights_only.

A checkpoint is a dict ``{"format": "rnnlm-checkpoint", "version": 2, "name": "lstm",
"model_config": ..., "vocab": <Vocab.to_dict(): tokens, level, tokenizer, the corpus and its
cleaning>, "vocab_fingerprint": ..., "state_dict": ..., "step": ..., "val_perplexity": ...}``:
a model file is self-contained (:func:`load_packaged` needs nothing beside it). Loading never
unpickles arbitrary objects (``torch.load(..., weights_only=True)``), so a tampered file cannot
run code; a truncated, foreign or old-style file gives one clear error.

A resume state (``checkpoints/<name>.resume.pt``, :func:`resume_payload`) is a model file plus what
continuing a run needs: the optimizer's, lr schedule's and loss scaler's states, the position, the
carried hidden state, every rank's random state, the history and the run's fingerprint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import paths
from .errors import RnnlmError
from .fileio import write_bytes
from .models import LanguageModel, build
from .vocab import Vocab

FORMAT = "rnnlm-checkpoint"
VERSION = 2  # 2: the vocabulary travels inside the file


def cpu_state_dict(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def model_payload(
    name: str, model_config: dict, vocab: Vocab, state_dict: dict, step: int, val_ppl: float, precision: str
) -> dict:
    """A model file's content (as :func:`save_checkpoint` takes it): weights, config, vocabulary,
    and the precision it was trained in (the results table's ``impl`` says ``torch (bf16)``)."""
    return {
        "name": name,
        "model_config": dict(model_config),
        "vocab": vocab.to_dict(),
        "vocab_fingerprint": vocab.fingerprint,
        "vocab_size": len(vocab),
        "state_dict": state_dict,
        "step": step,
        "val_perplexity": val_ppl,
        "precision": precision,
    }


def model_files(root: Path, models) -> dict[str, Path]:
    """``models/<name>.pt`` of each model, every one checked to exist before any slow work."""
    files = {m: Path(root) / paths.MODEL_DIR / f"{m}.pt" for m in models}
    for m, path in files.items():
        if not path.exists():
            raise RnnlmError(f"{path}: checkpoint not found; run `dvc repro train@{m}` first")
    return files


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
) -> tuple[LanguageModel, dict]:
    """Rebuild the model stored in a checkpoint; refuse one trained on another vocabulary.
    ``own``: as for :func:`load_checkpoint`."""
    ckpt = load_checkpoint(path, own) if ckpt is None else ckpt
    if vocab_fingerprint is not None and ckpt.get("vocab_fingerprint") != vocab_fingerprint:
        raise RnnlmError(f"{path}: trained on a different vocabulary than data/vocab.json; rerun its training stage")
    try:
        model = build(ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise RnnlmError(f"{path}: checkpoint does not match its model config: {str(exc)[:200]}") from None
    return model.to(device), ckpt


def load_packaged(path: str | os.PathLike, device="cpu") -> tuple[LanguageModel, Vocab, dict]:
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


# --- the resume state ----------------------------------------------------------------------------
def fingerprint(*parts) -> str:
    """sha256 of ``parts``: numpy arrays by their bytes, anything else as sorted JSON."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(memoryview(np.ascontiguousarray(p)).cast("B"))  # no copy of a big split
        else:
            h.update(json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def resume_fingerprint(name, model_cfg, cfg, device_type, nproc, vocab, train_tokens, val_tokens, code) -> str:
    """What a resumed run must agree on: everything but the thread count (CPU and CUDA runs
    differ numerically, so the resolved device type counts, not the `auto` spelling), the
    number of processes, and the code (its fingerprint ``code``)."""
    return fingerprint(
        name,
        asdict(model_cfg),
        {k: v for k, v in asdict(cfg).items() if k not in ("threads", "device", "nproc", "backend")},
        device_type,
        nproc,
        vocab.fingerprint,
        train_tokens,
        val_tokens,
        code,
    )


def rng_state(device: torch.device) -> dict:
    """This process's torch random state (and its GPU's)."""
    rng = {"cpu": torch.random.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def resume_payload(model_file: dict, fingerprint: str, optimizer, scheduler, scaler, progress: dict) -> dict:
    """A resume state: ``model_file`` (:func:`model_payload`), the run's ``fingerprint``, the
    optimizer's, lr schedule's and loss scaler's states, and ``progress`` (position, carried state,
    every rank's random state, history, best point, ...)."""
    return {
        **model_file,
        "fingerprint": fingerprint,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict() if scaler is not None else {},
        **progress,
    }


def read_resume(path: Path, fingerprint: str, name: str, log) -> dict | None:
    """The resume state at ``path`` if it is one of this run (``fingerprint``); else None, with a
    line to ``log`` saying why it starts over."""
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path)
    except RnnlmError as exc:
        log(f"{name}: ignoring unreadable resume state ({exc}); starting over")
        return None
    if ckpt.get("fingerprint") != fingerprint:
        log(f"{name}: resume state is for other params, data or code; starting over")
        return None
    log(f"{name}: resuming after step {ckpt['position']['step']} (from {path})")
    return ckpt


def restore_resume(ckpt: dict, model, optimizer, scheduler, scaler, rank: int, device: torch.device) -> None:
    """Load a resume state into the run's objects, and rank ``rank``'s random state."""
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"][rank]
    torch.random.set_rng_state(rng["cpu"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
