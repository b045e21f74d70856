"""The training loop: minibatches, gradient clipping, per-epoch validation, DVCLive logging,
best/last checkpoints, early stopping, lr decay on plateau, and resume after interruption.

Resume: at the end of every epoch the full training state (weights, optimizer, scheduler,
best weights so far, per-epoch history) is written atomically to
``checkpoints/<model>.resume.pt``. If a run is interrupted (Ctrl-C, SIGTERM, a crash), the
next run of the same stage with the same params and data resumes after the last completed
epoch; any change of params or data makes it start over. All randomness of an epoch is
derived from (seed, epoch), so a resumed run produces the same weights and metrics as an
uninterrupted one. The resume file is deleted when training completes.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .batching import batches, check_batchable, num_batches
from .checkpoint import cpu_state_dict, load_checkpoint, save_checkpoint
from .device import bf16_native, resolve_device
from .errors import ParamError, RnnlmError
from .fileio import write_json
from .metrics import model_nll, perplexity
from .models import RNNLM, detach_state, num_parameters

CHECK_EVERY = 25  # steps between looks at the loss on the host (avoids a sync every step)
EVAL_BATCH = 1  # per-epoch validation: one stream, every token with its full context (exact)


@dataclass
class TrainPaths:
    best: Path  # models/<name>.pt
    last: Path  # models/<name>.last.pt
    live_dir: Path  # metrics/train/<name>
    resume: Path  # checkpoints/<name>.resume.pt

    @classmethod
    def for_model(cls, name: str, root: Path = Path(".")) -> "TrainPaths":
        return cls(root / "models" / f"{name}.pt", root / "models" / f"{name}.last.pt",
                   root / "metrics" / "train" / name, root / "checkpoints" / f"{name}.resume.pt")


def build_model(model_cfg: dict, cell: str, vocab_size: int) -> RNNLM:
    return RNNLM(cell=cell, impl=model_cfg["impl"], vocab_size=vocab_size, hidden=model_cfg["hidden"],
                 layers=model_cfg["layers"], dropout=model_cfg["dropout"], embedding=model_cfg["embedding"])


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    name, lr, wd = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ParamError("train.optimizer", f"unknown optimizer {name!r}")


def train_step(model, optimizer, X, Y, state, clip_theta: float, amp_dtype=None):
    """One optimizer step on the minibatch (X, Y) from ``state``; returns (loss, new state).

    The loss stays on the device (no host sync). ``amp_dtype`` (e.g. torch.bfloat16) runs the
    forward pass under autocast; the loss is computed in float32 either way."""
    with torch.autocast(X.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        logits, state = model(X, state)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), Y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_theta > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_theta)
    optimizer.step()
    return loss.detach(), state


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63)


class Trainer:
    def __init__(self, name: str, model_cfg: dict, cfg: dict, vocab, train_tokens: np.ndarray,
                 val_tokens: np.ndarray, paths: TrainPaths, progress: bool | None = None, log=print):
        self.name, self.model_cfg, self.cfg = name, model_cfg, cfg
        self.vocab, self.train_tokens, self.val_tokens = vocab, train_tokens, val_tokens
        self.paths, self.progress, self.log = paths, progress, log
        check_batchable(len(train_tokens), cfg["batch_size"], cfg["num_steps"], cfg["sampling"])
        if len(val_tokens) < 2:
            raise ParamError("vocab.split", "the val split needs at least 2 tokens")
        self.device = resolve_device(cfg["device"], "train.device")
        if cfg["threads"] > 0:
            torch.set_num_threads(cfg["threads"])
        # train.precision: bf16 runs the forward pass under autocast (matmuls and the torch.nn
        # recurrent kernels in bfloat16, e.g. on AMX or tensor cores); the weights, their
        # gradients, the optimizer and every reported perplexity stay float32.
        self.amp_dtype = torch.bfloat16 if cfg["precision"] == "bf16" else None
        if self.amp_dtype is not None and not bf16_native(self.device):
            self.log(f"{name}: warning: train.precision=bf16, but this {self.device.type} has no native bfloat16 "
                     "matmuls, so it is emulated and slower than fp32")
        torch.manual_seed(cfg["seed"])
        self.model = build_model(model_cfg, name, len(vocab)).to(self.device)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.scheduler = None
        if cfg["lr_decay"] < 1.0:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min",
                                                                        factor=cfg["lr_decay"], patience=0)
        # What a resumed run must agree on: everything but the thread count (CPU and CUDA runs
        # differ numerically, so the resolved device type counts, not the `auto` spelling).
        self.fingerprint = fingerprint(
            name, model_cfg, {k: v for k, v in cfg.items() if k not in ("threads", "device")},
            self.device.type, vocab.fingerprint, train_tokens, val_tokens)

    # --- one epoch -------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> tuple[float, int, float]:
        cfg, model, device = self.cfg, self.model, self.device
        torch.manual_seed(_epoch_seed(cfg["seed"], epoch))
        rng = np.random.default_rng([cfg["seed"], epoch])
        model.train()
        state = None
        losses: list[torch.Tensor] = []
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        tokens = 0
        total = num_batches(len(self.train_tokens), cfg["batch_size"], cfg["num_steps"], cfg["sampling"])
        bar = tqdm(total=total * cfg["batch_size"] * cfg["num_steps"], unit="tok", unit_scale=True,
                   desc=f"{self.name} epoch {epoch + 1}/{cfg['epochs']}", leave=False,
                   disable=not self.progress if self.progress is not None else None)
        start = time.perf_counter()
        for step, (X, Y) in enumerate(batches(self.train_tokens, cfg["batch_size"], cfg["num_steps"],
                                              cfg["sampling"], rng)):
            X, Y = X.to(device, non_blocking=True), Y.to(device, non_blocking=True)
            if cfg["sampling"] == "random" or state is None:
                state = model.begin_state(X.shape[0], device)  # fresh state per random minibatch
            else:
                state = detach_state(state)  # carried across sequential minibatches, cut from the graph
            loss, state = train_step(model, self.optimizer, X, Y, state, cfg["clip_theta"], self.amp_dtype)
            losses.append(loss)
            loss_sum += loss.double() * Y.numel()
            tokens += Y.numel()
            bar.update(Y.numel())
            if len(losses) == CHECK_EVERY:
                self._check_finite(losses, epoch, step)
                bar.set_postfix(loss=f"{float(losses[-1]):.3f}")
                losses = []
        if losses:
            self._check_finite(losses, epoch, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        bar.close()
        return float(loss_sum) / tokens, tokens, seconds

    def _check_finite(self, losses, epoch, last_step):
        window = torch.stack(losses)
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            step = last_step - len(losses) + 1 + int(bad[0, 0])
            raise RnnlmError(
                f"{self.name}: training diverged: non-finite loss at epoch {epoch + 1}, step {step + 1} "
                f"(lr={self.optimizer.param_groups[0]['lr']:g}); lower {self.name}.lr or train.lr, or set "
                "train.clip_theta. No checkpoint of the diverged state was written."
            )

    def val_perplexity(self) -> float:
        nll, n = model_nll(self.model, self.val_tokens, EVAL_BATCH, self.cfg["num_steps"], self.device)
        return perplexity(nll, n)

    # --- the run ---------------------------------------------------------------------
    def _checkpoint_payload(self, state_dict, epoch, val_ppl) -> dict:
        return {"model_config": dict(self.model.config), "vocab_fingerprint": self.vocab.fingerprint,
                "vocab_size": len(self.vocab), "state_dict": state_dict, "epoch": epoch, "val_perplexity": val_ppl}

    def _try_resume(self) -> dict | None:
        path = self.paths.resume
        if not path.exists():
            return None
        try:
            ckpt = load_checkpoint(path)
        except RnnlmError as exc:
            self.log(f"{self.name}: ignoring unreadable resume state ({exc}); starting over")
            return None
        if ckpt.get("fingerprint") != self.fingerprint:
            self.log(f"{self.name}: resume state is for other params or data; starting over")
            return None
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.log(f"{self.name}: resuming after epoch {ckpt['epoch']} (from {path})")
        return ckpt

    def run(self) -> dict:
        from dvclive import Live  # imported here: keeps `import rnnlm.train` light for tests

        cfg, paths = self.cfg, self.paths
        resumed = self._try_resume()
        history: list[dict] = list(resumed["history"]) if resumed else []
        best = {"val_perplexity": math.inf, "epoch": 0, "state_dict": None}
        if resumed:
            best = {"val_perplexity": resumed["best_val_perplexity"], "epoch": resumed["best_epoch"],
                    "state_dict": resumed["best_state_dict"]}
        stale = resumed["stale"] if resumed else 0
        start_epoch = resumed["epoch"] if resumed else 0

        live = Live(dir=str(paths.live_dir), dvcyaml=False, save_dvc_exp=False)
        for row in history:  # replay the epochs of an interrupted run so the logs are whole
            self._log_epoch(live, row)
        stopped_early = False
        for epoch in range(start_epoch, cfg["epochs"]):
            if cfg["patience"] and stale >= cfg["patience"]:
                stopped_early = True
                break
            train_loss, tokens, seconds = self._train_epoch(epoch)
            val_ppl = self.val_perplexity()
            train_ppl = perplexity(train_loss, 1)
            if not (math.isfinite(val_ppl) and math.isfinite(train_ppl)):
                raise RnnlmError(
                    f"{self.name}: training diverged: perplexity overflowed in epoch {epoch + 1} (train "
                    f"{train_ppl:g}, val {val_ppl:g}); lower {self.name}.lr or train.lr, or set train.clip_theta. "
                    "No checkpoint of the diverged state was written.")
            row = {"epoch": epoch + 1, "train_perplexity": train_ppl, "val_perplexity": val_ppl,
                   "lr": self.optimizer.param_groups[0]["lr"], "tokens": tokens, "seconds": seconds}
            history.append(row)
            self._log_epoch(live, row)
            self.log(f"{self.name} epoch {epoch + 1}/{cfg['epochs']}: train ppl {row['train_perplexity']:.3f}, "
                     f"val ppl {val_ppl:.3f}, {tokens / seconds:,.0f} tok/s")
            if val_ppl < best["val_perplexity"]:
                best = {"val_perplexity": val_ppl, "epoch": epoch + 1, "state_dict": cpu_state_dict(self.model)}
                stale = 0
            else:
                stale += 1
            if self.scheduler is not None:
                self.scheduler.step(val_ppl)
            save_checkpoint(paths.resume, {
                **self._checkpoint_payload(cpu_state_dict(self.model), epoch + 1, val_ppl),
                "fingerprint": self.fingerprint, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "history": history, "best_val_perplexity": best["val_perplexity"], "best_epoch": best["epoch"],
                "best_state_dict": best["state_dict"], "stale": stale})

        last = history[-1]
        live.step = last["epoch"]  # next_step() left it one past the last epoch; the summary's step is the epoch
        save_checkpoint(paths.best, self._checkpoint_payload(best["state_dict"], best["epoch"], best["val_perplexity"]))
        save_checkpoint(paths.last, self._checkpoint_payload(cpu_state_dict(self.model), last["epoch"],
                                                             last["val_perplexity"]))
        live.summary["best"] = {"val_perplexity": best["val_perplexity"], "epoch": best["epoch"]}
        live.summary["params"] = num_parameters(self.model)
        live.summary["epochs_run"] = len(history)
        live.summary["stopped_early"] = stopped_early
        live.make_summary()
        live.end()
        train_tokens = sum(r["tokens"] for r in history)
        train_seconds = sum(r["seconds"] for r in history)
        timing = {"train_seconds": round(train_seconds, 3), "tokens": train_tokens,
                  "tokens_per_second": round(train_tokens / train_seconds, 1), "device": str(self.device),
                  "threads": torch.get_num_threads(), "precision": cfg["precision"]}
        write_json(paths.live_dir / "timing.json", timing)
        paths.resume.unlink(missing_ok=True)
        return {"best_val_perplexity": best["val_perplexity"], "best_epoch": best["epoch"],
                "history": history, **timing}

    @staticmethod
    def _log_epoch(live, row):
        live.step = row["epoch"]  # x axis of the per-epoch plots: epoch 1, 2, ...
        live.log_metric("train/perplexity", row["train_perplexity"])
        live.log_metric("val/perplexity", row["val_perplexity"])
        live.log_metric("lr", row["lr"])
        live.next_step()
