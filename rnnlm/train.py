"""The training loop: minibatches, gradient clipping, validation at fixed points, DVCLive
logging, best/last checkpoints, early stopping, lr decay on plateau, and resume after interruption.

Training stops at the first budget reached (``epochs``, ``max_steps``, ``max_minutes``) and
validates every ``eval_every`` steps (0 = every epoch) and where a budget ends. At every
validation point the whole state is written to ``checkpoints/<model>.resume.pt``; the next run
with the same params, data and code (:func:`code_fingerprint`) resumes from it, and as all
randomness of an epoch derives from (seed, epoch), it ends with the same weights as an
uninterrupted run. With ``train.nproc`` > 1 (:mod:`rnnlm.distributed`) every rank trains its rows
of each minibatch through DistributedDataParallel; rank 0 alone validates and writes files.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import codehash
from .batching import as_tensor, batches, check_batchable, num_batches
from .checkpoint import cpu_state_dict, load_checkpoint, save_checkpoint
from .device import cpu_capability, free_threads, resolve_device, resolve_precision
from .distributed import World
from .errors import ParamError, RnnlmError
from .fileio import replace_dir, write_json
from .metrics import model_nll, perplexity
from .models import RNNLM, detach_state, num_parameters
from .params import ModelConfig, TrainConfig

CHECK_EVERY = 25  # steps between looks at the loss on the host (avoids a sync every step)
COSINE_FLOOR = 0.1  # lr_schedule cosine ends at this fraction of lr
EVAL_BATCH = 1  # per-epoch validation: one stream, every token with its full context (exact)


@dataclass
class TrainPaths:
    best: Path  # models/<name>.pt
    last: Path  # models/<name>.last.pt
    live_dir: Path  # metrics/train/<name>
    resume: Path  # checkpoints/<name>.resume.pt
    live_staging: Path  # checkpoints/<name>.live: DVCLive writes here; it replaces live_dir when a run ends

    @classmethod
    def for_model(cls, name: str, root: Path = Path(".")) -> TrainPaths:
        return cls(
            root / "models" / f"{name}.pt",
            root / "models" / f"{name}.last.pt",
            root / "metrics" / "train" / name,
            root / "checkpoints" / f"{name}.resume.pt",
            root / "checkpoints" / f"{name}.live",
        )


def build_model(model_cfg: ModelConfig, name: str, vocab_size: int) -> RNNLM:
    """Model section ``name`` (its ``cell`` says which network) for a vocabulary of ``vocab_size``."""
    if model_cfg.softmax == "adaptive" and model_cfg.cutoffs and model_cfg.cutoffs[-1] > vocab_size - 1:
        raise ParamError(
            f"{name}.cutoffs",
            f"{model_cfg.cutoffs} does not fit a vocabulary of {vocab_size} tokens: "
            f"each cluster bound must be at most {vocab_size - 1}; use cutoffs: [] "
            "(the default bounds for this vocabulary) or softmax: full",
        )
    return RNNLM(vocab_size=vocab_size, **asdict(model_cfg))


def check_inputs(cfg: TrainConfig, train_tokens: np.ndarray, val_tokens: np.ndarray) -> None:
    """The splits can be trained and validated on with these params (ParamError if not)."""
    check_batchable(len(train_tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
    if len(val_tokens) < 2:
        raise ParamError("vocab.split", "the val split needs at least 2 tokens")


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def set_threads(threads: int, processes: int) -> float | None:
    """torch's CPU threads: ``train.threads``, or with 0 (one process) torch's default less the
    cores other work holds at the start. Returns the busy cores seen (None: not looked)."""
    if threads > 0:
        torch.set_num_threads(threads)
    elif processes == 1:
        threads, busy = free_threads(torch.get_num_threads())
        torch.set_num_threads(threads)
        return busy
    return None


def make_scheduler(optimizer, cfg: TrainConfig, total: int):
    """The lr schedule, stepped at validation points (plateau) or after every step (cosine); None: constant."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)),
        )
    if cfg.lr_decay < 1.0:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.lr_decay, patience=0)
    return None


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class TokenNLL(torch.nn.Module):
    """``model.token_nll`` as a module's forward: DistributedDataParallel syncs the gradients of
    what its wrapped module's forward computed."""

    def __init__(self, model: RNNLM):
        super().__init__()
        self.model = model

    def forward(self, X, Y, state):
        return self.model.token_nll(X, Y, state)


def train_step(model, optimizer, X, Y, state, clip_theta: float, amp_dtype=None, scaler=None, forward=None):
    """One optimizer step on the minibatch (X, Y) from ``state``; returns (loss, new state).

    The loss stays on the device (no host sync). ``amp_dtype`` (torch.bfloat16 or torch.float16)
    runs the forward pass under autocast; the loss is computed in float32 either way. ``scaler``: a
    ``torch.amp.GradScaler`` (needed by float16, whose small gradients underflow unscaled).
    ``forward`` computes (nll, state) in place of ``model.token_nll`` (e.g. a DDP-wrapped TokenNLL)."""
    with torch.autocast(X.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        nll, state = (forward or model.token_nll)(X, Y, state)
    loss = nll.float().mean()
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
    if clip_theta > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_theta)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when the gradients overflowed; the scale then shrinks
        scaler.update()
    return loss.detach(), state


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(memoryview(np.ascontiguousarray(p)).cast("B"))  # no copy of a big split
        else:
            h.update(json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def code_fingerprint(package: Path = Path(__file__).parent) -> str:
    """What training runs, by content (:mod:`rnnlm.codehash`): train.py and every package module
    it imports, comments and docstrings aside. A resume state is only valid for the same code."""
    script = Path(package) / "train.py"
    return codehash.fingerprint([script, *codehash.closure(script, Path(package), in_package=True)], Path(package))


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63)


@dataclass
class Position:
    """Where a run stands: optimizer steps done, the epoch under way, and its minibatches done."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Segment:
    """The training between two validation points."""

    loss: float  # mean training loss (nats per token, dropout on)
    tokens: int
    seconds: float
    stop: str | None  # the budget that ended training here: "epochs", "max_steps", "max_minutes"


class Trainer:
    def __init__(
        self,
        name: str,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        vocab,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        paths: TrainPaths | None,
        progress: bool | None = None,
        log=print,
        world: World = World(),
        device: torch.device | None = None,
    ):
        """``paths``: where rank 0 writes (None on the other ranks, which write nothing).
        ``device``: this rank's device (default: train.device resolved)."""
        self.name, self.model_cfg, self.cfg, self.world = name, model_cfg, cfg, world
        self.vocab, self.val_tokens = vocab, val_tokens
        self.paths, self.progress = paths, progress if world.writer else False
        self.log = log if world.writer else (lambda *args, **kwargs: None)
        check_inputs(cfg, train_tokens, val_tokens)
        self.device = device or resolve_device(cfg.device, "train.device")
        # train.precision auto -> bf16 or fp32 for this model and device (the stage resolves it
        # first, naming the key it came from); bf16/fp16 run the forward pass under autocast
        # (matmuls and the torch.nn recurrent kernels in 16 bits, e.g. on AMX or tensor cores); the
        # weights, their gradients, the optimizer and every reported perplexity stay float32. fp16
        # scales the loss (GradScaler) so that small gradients do not underflow.
        self.cfg = cfg = replace(
            cfg, precision=resolve_precision(cfg.precision, self.device, model_cfg.cell, model_cfg.impl)
        )
        busy = set_threads(cfg.threads, world.size)
        # The token array lives on the device once: minibatches are views and index gathers there.
        self.train_data = as_tensor(train_tokens).to(self.device)
        self.rows = world.rows(cfg.batch_size)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        where = f"{self.device.type} ({cpu_capability()})" if self.device.type == "cpu" else str(self.device)
        shared = (
            f" ({round(busy)} core(s) busy with other work; train.threads fixes the count)"
            if busy is not None and round(busy) > 0
            else ""
        )
        self.log(f"{name}: training on {where} in {cfg.precision}, {torch.get_num_threads()} thread(s){shared}")
        torch.manual_seed(cfg.seed)
        self.model = build_model(model_cfg, name, len(vocab)).to(self.device)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.forward = None  # one process: model.token_nll
        if world.size > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                TokenNLL(self.model),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # the adaptive softmax skips a tail cluster with no target among a rank's rows
                find_unused_parameters=self.model.adaptive is not None,
            )
        self.steps_per_epoch = num_batches(len(train_tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.total_steps())
        self.fingerprint = self._resume_fingerprint(train_tokens, val_tokens)

    def _resume_fingerprint(self, train_tokens: np.ndarray, val_tokens: np.ndarray) -> str:
        """What a resumed run must agree on: everything but the thread count (CPU and CUDA runs
        differ numerically, so the resolved device type counts, not the `auto` spelling), the
        number of processes, and the code."""
        cfg = self.cfg
        return fingerprint(
            self.name,
            asdict(self.model_cfg),
            {k: v for k, v in asdict(cfg).items() if k not in ("threads", "device", "nproc", "backend")},
            self.device.type,
            self.world.size,
            self.vocab.fingerprint,
            train_tokens,
            val_tokens,
            code_fingerprint(),
        )

    # --- budgets ---------------------------------------------------------------------
    def total_steps(self) -> int:
        """Optimizer steps the epoch and step budgets allow (the time budget may stop earlier)."""
        steps = self.cfg.epochs * self.steps_per_epoch
        return min(steps, self.cfg.max_steps) if self.cfg.max_steps else steps

    def _budget_reached(self, pos: Position, elapsed: float) -> str | None:
        cfg = self.cfg
        if pos.epoch >= cfg.epochs:
            return "epochs"
        if cfg.max_steps and pos.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_minutes and self._time_is_up(pos, elapsed):
            return "max_minutes"
        return None

    def _time_is_up(self, pos: Position, elapsed: float) -> bool:
        """Several ranks follow rank 0's clock, looked at every CHECK_EVERY steps (a collective)."""
        if self.world.size == 1 or elapsed == 0.0:  # 0.0: a segment's start, on every rank (no collective)
            return elapsed >= self.cfg.max_minutes * 60
        return pos.step % CHECK_EVERY == 0 and self.world.broadcast(elapsed >= self.cfg.max_minutes * 60)

    # --- training between two validation points ----------------------------------------
    def _segment(self, pos: Position, carried, clock, bar) -> tuple[Segment, object]:
        """Train from ``pos`` (updated in place) to the next validation point: every ``eval_every``
        steps, else the end of the epoch, or the end of a budget. ``carried`` is the hidden state
        carried across sequential minibatches (None at an epoch start). ``clock()`` is the
        wall-clock time spent so far, over interruptions. Returns the segment and the carried state."""
        cfg, model, device = self.cfg, self.model, self.device
        model.train()
        losses: list[torch.Tensor] = []
        # a float64 running sum on the device (float32 on Apple mps, which has no float64)
        loss_sum = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
        tokens, start = 0, time.perf_counter()
        stop = self._budget_reached(pos, elapsed=0.0)  # the time budget allows at least one step
        while stop is None:
            if pos.batch == 0:  # a new epoch: its randomness derives from (seed, epoch, rank) alone
                torch.manual_seed(_epoch_seed(cfg.seed, pos.epoch) + self.world.rank)
                carried = None
            rng = np.random.default_rng([cfg.seed, pos.epoch])  # the same global minibatches on every rank
            epoch_batches = batches(self.train_data, cfg.batch_size, cfg.num_steps, cfg.sampling, rng)
            at_eval = False
            for X, Y in itertools.islice(epoch_batches, pos.batch, None):
                X, Y = X[self.rows], Y[self.rows]  # this rank's rows (all of them in one process)
                if cfg.sampling == "random" or carried is None:
                    carried = model.begin_state(X.shape[0], device)  # fresh state per random minibatch
                else:
                    carried = detach_state(carried)  # carried across sequential minibatches, cut from the graph
                loss, carried = train_step(
                    model, self.optimizer, X, Y, carried, cfg.clip_theta, self.amp_dtype, self.scaler, self.forward
                )
                if cfg.lr_schedule == "cosine":
                    self.scheduler.step()
                pos.step, pos.batch = pos.step + 1, pos.batch + 1
                losses.append(loss)
                loss_sum += loss.to(loss_sum.dtype) * Y.numel()
                tokens += Y.numel()
                bar.update(1)
                if len(losses) == CHECK_EVERY:
                    self._check_finite(losses, pos)
                    bar.set_postfix(loss=f"{float(losses[-1]):.3f}", epoch=pos.epoch + 1)
                    losses = []
                stop = self._budget_reached(pos, clock())
                at_eval = cfg.eval_every > 0 and pos.step % cfg.eval_every == 0
                if stop or at_eval:
                    break
            else:  # the epoch is done
                pos.epoch, pos.batch = pos.epoch + 1, 0
                stop = self._budget_reached(pos, clock())
                at_eval = cfg.eval_every == 0
            if at_eval:
                break
        if losses:
            self._check_finite(losses, pos)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start  # (no budget stops before step 1: epochs >= 1, 0 = no budget)
        totals = self.world.gather((float(loss_sum), tokens))  # every rank's share of the global minibatches
        loss_total, tokens = sum(t[0] for t in totals), sum(t[1] for t in totals)
        return Segment(loss_total / max(tokens, 1), tokens, seconds, stop), carried

    def _fail(self, message: str):
        """An error every rank met at the same point: rank 0 reports it, the others stop quietly."""
        if self.world.writer:
            raise RnnlmError(message)
        raise SystemExit(1)

    def _check_finite(self, losses, pos: Position):
        window = torch.stack(losses)
        bad = (~torch.isfinite(window)).nonzero()
        first = pos.step - len(losses) + 1 + int(bad[0, 0]) if len(bad) else None
        steps = [s for s in self.world.gather(first) if s is not None]  # the ranks decide together
        if steps:
            step = min(steps)
            clip = "lower train.clip_theta" if self.cfg.clip_theta > 0 else "set train.clip_theta (e.g. 1.0)"
            self._fail(
                f"{self.name}: training diverged: non-finite loss at step {step} (epoch {pos.epoch + 1}, "
                f"lr={self.optimizer.param_groups[0]['lr']:g}); lower {self.name}.lr or train.lr, or {clip}. "
                "No checkpoint of the diverged state was written."
            )

    def val_perplexity(self) -> float:
        """Rank 0 validates on the val split's first ``eval_tokens`` tokens (all with 0: a bounded
        cost per validation point on a big corpus); every rank gets its result."""
        ppl = None
        if self.world.writer:
            tokens = self.val_tokens[: self.cfg.eval_tokens + 1] if self.cfg.eval_tokens else self.val_tokens
            nll, n = model_nll(self.model, tokens, EVAL_BATCH, self.cfg.num_steps, self.device)
            ppl = perplexity(nll, n)
        return self.world.broadcast(ppl)

    # --- checkpoints -----------------------------------------------------------------
    def _checkpoint_payload(self, state_dict, step, val_ppl) -> dict:
        return {
            "name": self.name,
            "model_config": dict(self.model.config),
            "vocab": self.vocab.to_dict(),
            "vocab_fingerprint": self.vocab.fingerprint,
            "vocab_size": len(self.vocab),
            "state_dict": state_dict,
            "step": step,
            "val_perplexity": val_ppl,
        }

    def _save_resume(self, pos: Position, carried, history, best, stale, elapsed) -> None:
        """Rank 0 writes the state of every rank: its random state and its rows of the carried state."""
        rng = {"cpu": torch.random.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if carried is not None:
            carried = [t.detach().cpu() for t in (carried if isinstance(carried, tuple) else (carried,))]
        ranks = self.world.gather((rng, carried))
        if not self.world.writer:
            return
        if carried is not None:  # (layers, rows, hidden) blocks -> the whole minibatch's state
            carried = [torch.cat([c[i] for _, c in ranks], dim=1) for i in range(len(carried))]
        save_checkpoint(
            self.paths.resume,
            {
                **self._checkpoint_payload(cpu_state_dict(self.model), pos.step, history[-1]["val_perplexity"]),
                "fingerprint": self.fingerprint,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "position": {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch},
                "carried": carried,
                "rng": [r for r, _ in ranks],
                "history": history,
                "best": best,
                "stale": stale,
                "elapsed": elapsed,
            },
        )

    def _read_resume(self) -> dict | None:
        path = self.paths.resume
        if not path.exists():
            return None
        try:
            ckpt = load_checkpoint(path)
        except RnnlmError as exc:
            self.log(f"{self.name}: ignoring unreadable resume state ({exc}); starting over")
            return None
        if ckpt.get("fingerprint") != self.fingerprint:
            self.log(f"{self.name}: resume state is for other params, data or code; starting over")
            return None
        self.log(f"{self.name}: resuming after step {ckpt['position']['step']} (from {path})")
        return ckpt

    def _try_resume(self) -> dict | None:
        """The resume state rank 0 read (shared with every rank), loaded into this rank's objects."""
        ckpt = self.world.broadcast(self._read_resume() if self.world.writer else None)
        if ckpt is None:
            return None
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"][self.world.rank]
        torch.random.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if ckpt["carried"] is not None:  # this rank's rows of the whole minibatch's state
            ckpt["carried"] = [t[:, self.rows] for t in ckpt["carried"]]
        return ckpt

    # --- the run ---------------------------------------------------------------------
    def run(self) -> dict:
        from dvclive import Live  # imported here: keeps `import rnnlm.train` light for tests

        paths = self.paths
        resumed = self._try_resume() or {}
        pos = Position(**resumed.get("position", {}))
        carried = resumed.get("carried")
        if carried is not None:
            carried = tuple(t.to(self.device) for t in carried) if len(carried) > 1 else carried[0].to(self.device)
        history: list[dict] = list(resumed.get("history", []))
        best = resumed.get("best", {"val_perplexity": math.inf, "step": 0, "epoch": 0.0, "state_dict": None})
        stale = resumed.get("stale", 0)
        started, elapsed0 = time.perf_counter(), resumed.get("elapsed", 0.0)
        clock = lambda: elapsed0 + time.perf_counter() - started  # noqa: E731

        live, made_dir = None, False
        if self.world.writer:  # a failed run leaves the last run's metrics where they were
            made_dir = not paths.live_staging.parent.exists()
            shutil.rmtree(paths.live_staging, ignore_errors=True)
            live = Live(dir=str(paths.live_staging), dvcyaml=False, save_dvc_exp=False)
        try:
            return self._loop(live, pos, carried, history, best, stale, clock)
        finally:  # published by _finish, or the run failed: no staging directory stays
            if live is not None:
                shutil.rmtree(paths.live_staging, ignore_errors=True)
                if made_dir:
                    with contextlib.suppress(OSError):
                        paths.live_staging.parent.rmdir()  # checkpoints/, made for it and empty again

    def _loop(self, live, pos: Position, carried, history: list[dict], best: dict, stale: int, clock) -> dict:
        cfg = self.cfg
        for row in history:  # replay the validation points of an interrupted run so the logs are whole
            self._log_point(live, row)
        bar = tqdm(
            total=self.total_steps(),
            initial=pos.step,
            unit="step",
            desc=self.name,
            leave=False,
            disable=not self.progress if self.progress is not None else None,
        )
        while True:
            seg, carried = self._segment(pos, carried, clock, bar)
            if seg.tokens == 0:  # a budget ended right at the last validation point: nothing new to validate
                stop = seg.stop
                break
            val_ppl = self.val_perplexity()
            train_ppl = perplexity(seg.loss, 1)
            if not (math.isfinite(val_ppl) and math.isfinite(train_ppl)):
                self._fail(
                    f"{self.name}: training diverged: perplexity overflowed by step {pos.step} (train "
                    f"{train_ppl:g}, val {val_ppl:g}); lower {self.name}.lr or train.lr. "
                    "No checkpoint of the diverged state was written."
                )
            row = {
                "step": pos.step,
                "epoch": round(pos.epoch + pos.batch / self.steps_per_epoch, 4),
                "train_perplexity": train_ppl,
                "val_perplexity": val_ppl,
                "lr": self.optimizer.param_groups[0]["lr"],
                "tokens": seg.tokens,
                "seconds": seg.seconds,
            }
            history.append(row)
            self._log_point(live, row)
            self.log(
                f"{self.name} step {pos.step} (epoch {row['epoch']:.2f}): train ppl {train_ppl:.3f}, "
                f"val ppl {val_ppl:.3f}, {seg.tokens / seg.seconds:,.0f} tok/s"
            )
            if val_ppl < best["val_perplexity"]:
                best = {
                    "val_perplexity": val_ppl,
                    "step": pos.step,
                    "epoch": row["epoch"],
                    "state_dict": cpu_state_dict(self.model) if self.world.writer else None,
                }
                stale = 0
            else:
                stale += 1
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val_ppl)
            stop = seg.stop or ("patience" if cfg.patience and stale >= cfg.patience else None)
            if stop:
                break
            self._save_resume(pos, carried, history, best, stale, clock())
        bar.close()
        return self._finish(live, history, best, stop)

    def _finish(self, live, history, best, stop) -> dict:
        paths, last = self.paths, history[-1]
        train_tokens = sum(r["tokens"] for r in history)
        train_seconds = sum(r["seconds"] for r in history)
        timing = {
            "train_seconds": round(train_seconds, 3),
            "tokens": train_tokens,
            "tokens_per_second": round(train_tokens / train_seconds, 1),
            "device": str(self.device),
            "cpu_capability": cpu_capability(),
            "threads": torch.get_num_threads(),
            "precision": self.cfg.precision,
            "nproc": self.world.size,
        }
        result = {
            "best_val_perplexity": best["val_perplexity"],
            "best_step": best["step"],
            "best_epoch": best["epoch"],
            "stopped_by": stop,
            "history": history,
            **timing,
        }
        if not self.world.writer:
            return result
        live.step = last["step"]  # next_step() left it one past the last point; the summary's step is the last one
        save_checkpoint(paths.best, self._checkpoint_payload(best["state_dict"], best["step"], best["val_perplexity"]))
        save_checkpoint(
            paths.last, self._checkpoint_payload(cpu_state_dict(self.model), last["step"], last["val_perplexity"])
        )
        live.summary.update(
            best={"val_perplexity": best["val_perplexity"], "step": best["step"], "epoch": best["epoch"]},
            params=num_parameters(self.model),
            steps=last["step"],
            epochs=last["epoch"],
            stopped_by=stop,
        )
        live.make_summary()
        live.end()
        write_json(paths.live_staging / "timing.json", timing)
        replace_dir(paths.live_staging, paths.live_dir)
        paths.resume.unlink(missing_ok=True)
        return result

    @staticmethod
    def _log_point(live, row):
        if live is None:  # not rank 0
            return
        live.step = row["step"]  # x axis of the plots: optimizer steps
        live.log_metric("train/perplexity", row["train_perplexity"])
        live.log_metric("val/perplexity", row["val_perplexity"])
        live.log_metric("lr", row["lr"])
        live.log_metric("epoch", row["epoch"])
        live.next_step()
