"""The training loop: minibatches, gradient clipping, validation at fixed points, DVCLive
logging, best/last checkpoints, early stopping, lr decay on plateau, and resume after interruption.

Training stops at the first budget reached (``epochs``, ``max_steps``, ``max_minutes``) and
validates every ``eval_every`` steps (0 = every epoch) and where a budget ends. At every
validation point the whole state is written to ``checkpoints/<model>.resume.pt``; the next run
with the same params, data and code (:func:`code_fingerprint`) resumes from it, and as all
randomness of an epoch derives from (seed, epoch), it ends with the same weights as an
uninterrupted run. With ``train.nproc`` > 1 (:mod:`rnnlm.distributed`) every rank trains its rows
of each minibatch through DistributedDataParallel; rank 0 alone validates and writes files.
:meth:`Trainer.run` is the whole loop; the wall-clock record goes to ``metrics/timing/<model>.json``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import code, paths
from .batching import as_tensor, batches, check_batchable, num_batches
from .checkpoint import (
    cpu_state_dict,
    model_payload,
    read_resume,
    restore_resume,
    resume_fingerprint,
    resume_payload,
    rng_state,
    save_checkpoint,
)
from .device import cpu_capability, free_threads, resolve_device, resolve_precision
from .distributed import World
from .errors import ParamError, RnnlmError
from .fileio import replace_dir, write_json
from .metrics import model_nll, perplexity
from .models import LanguageModel, build, detach_state, num_parameters
from .params import ModelConfig, TrainConfig, TransformerConfig

CHECK_EVERY = 25  # steps between looks at the loss on the host (avoids a sync every step)
COSINE_FLOOR = 0.1  # lr_schedule cosine ends at this fraction of lr
EVAL_BATCH = 1  # per-epoch validation: one stream, every token with its full context (exact)
POINT = ("val_perplexity", "step", "epoch")  # what the run records of its best validation point


@dataclass
class TrainPaths:
    best: Path  # models/<name>.pt
    last: Path  # models/<name>.last.pt
    live_dir: Path  # metrics/train/<name>
    resume: Path  # checkpoints/<name>.resume.pt
    live_staging: Path  # checkpoints/<name>.live: DVCLive writes here; it replaces live_dir when a run ends
    timing: Path  # metrics/timing/<name>.json: wall-clock record, outside live_dir (no stage reruns for it)

    @classmethod
    def for_model(cls, name: str, root: Path = Path(".")) -> TrainPaths:
        return cls(
            root / paths.MODEL_DIR / f"{name}.pt",
            root / paths.MODEL_DIR / f"{name}.last.pt",
            root / paths.TRAIN_METRICS / name,
            root / paths.CHECKPOINTS / f"{name}.resume.pt",
            root / paths.CHECKPOINTS / f"{name}.live",
            root / paths.TIMING / f"{name}.json",
        )


def build_model(model_cfg: ModelConfig | TransformerConfig, name: str, vocab_size: int) -> LanguageModel:
    """Model section ``name`` (its ``cell`` says which network) for a vocabulary of ``vocab_size``."""
    if model_cfg.softmax == "adaptive" and model_cfg.cutoffs and model_cfg.cutoffs[-1] > vocab_size - 1:
        raise ParamError(
            f"{name}.cutoffs",
            f"{model_cfg.cutoffs} does not fit a vocabulary of {vocab_size} tokens: "
            f"each cluster bound must be at most {vocab_size - 1}; use cutoffs: [] "
            "(the default bounds for this vocabulary) or softmax: full",
        )
    return build({**asdict(model_cfg), "vocab_size": vocab_size})


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


def where(device: torch.device, precision: str, busy: float | None) -> str:
    """Where training runs, for the log: e.g. "cpu (AVX2) in fp32, 2 thread(s)", and the cores seen busy."""
    place = f"{device.type} ({cpu_capability()})" if device.type == "cpu" else str(device)
    said = f"{place} in {precision}, {torch.get_num_threads()} thread(s)"
    if busy is not None and round(busy) > 0:
        said += f" ({round(busy)} core(s) busy with other work; train.threads fixes the count)"
    return said


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

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, X, Y, state):
        return self.model.token_nll(X, Y, state)


def train_step(model, optimizer, X, Y, state, clip_theta: float, amp_dtype=None, scaler=None, forward=None):
    """One optimizer step on the minibatch (X, Y) from ``state``; returns (loss, new state).

    The loss stays on the device (no host sync). ``amp_dtype`` (torch.bfloat16 or torch.float16)
    runs the forward pass under autocast; the loss is computed in float32 either way. ``scaler``: a
    ``torch.amp.GradScaler`` (needed by float16, whose small gradients underflow unscaled).
    ``forward`` computes (nll, state) in place of ``model.token_nll`` (e.g. a DDP-wrapped TokenNLL).
    The step descends the loss plus the model's ``activation_loss`` (AR/TAR) where it sets one; the
    returned loss is the mean NLL alone."""
    with torch.autocast(X.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        nll, state = (forward or model.token_nll)(X, Y, state)
    loss = nll.float().mean()
    objective = loss if model.activation_loss is None else loss + model.activation_loss.float()  # AR/TAR
    model.activation_loss = None
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        objective.backward()
    else:
        scaler.scale(objective).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
    if clip_theta > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_theta)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when the gradients overflowed; the scale then shrinks
        scaler.update()
    return loss.detach(), state


def code_fingerprint(package: Path = Path(__file__).parent) -> str:
    """What training runs, by content (:mod:`rnnlm.code`): train.py and every package module
    it imports, comments and docstrings aside. A resume state is only valid for the same code."""
    script = Path(package) / "train.py"
    return code.fingerprint([script, *code.closure(script, Path(package), in_package=True)], Path(package))


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63)


@dataclass
class Position:
    """Where a run stands: optimizer steps done, the epoch under way, and its minibatches done."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Segment:
    """The training since the last validation point, summed on the device as it runs."""

    loss_sum: torch.Tensor  # token losses: float64 (float32 on Apple mps, which has no float64)
    tokens: int = 0
    unchecked: list = field(default_factory=list)  # step losses not yet looked at on the host
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def on(cls, device: torch.device) -> Segment:
        return cls(torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device))

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.unchecked.append(loss)
        self.loss_sum += loss.to(self.loss_sum.dtype) * tokens
        self.tokens += tokens


def log_point(live, row: dict) -> None:
    """One validation point to DVCLive (None: not rank 0, which logs nothing)."""
    if live is None:
        return
    live.step = row["step"]  # x axis of the plots: optimizer steps
    live.log_metric("train/perplexity", row["train_perplexity"])
    live.log_metric("val/perplexity", row["val_perplexity"])
    live.log_metric("lr", row["lr"])
    live.log_metric("epoch", row["epoch"])
    live.next_step()


class Trainer:
    """One training run: the constructor builds it, :meth:`run` trains."""

    def __init__(
        self,
        name: str,
        model_cfg: ModelConfig | TransformerConfig,
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
        self.name, self.model_cfg, self.world, self.vocab, self.val_tokens = name, model_cfg, world, vocab, val_tokens
        self.paths, self.progress = paths, progress if world.writer else False
        self.log = log if world.writer else (lambda *args, **kwargs: None)
        check_inputs(cfg, train_tokens, val_tokens)
        self.device = device or resolve_device(cfg.device, "train.device")
        # precision auto -> bf16 or fp32 (the stage resolves it first, naming its key). bf16/fp16 run the
        # forward pass under autocast (16-bit matmuls and recurrent kernels, e.g. on AMX or tensor cores);
        # weights, gradients, optimizer and perplexities stay float32; fp16 scales the loss (GradScaler).
        self.cfg = cfg = replace(
            cfg, precision=resolve_precision(cfg.precision, self.device, model_cfg.cell, model_cfg.impl)
        )
        busy = set_threads(cfg.threads, world.size)
        # The token array lives on the device once: minibatches are views and index gathers there.
        self.train_data = as_tensor(train_tokens).to(self.device)
        self.rows = world.rows(cfg.batch_size)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.log(f"{name}: training on {where(self.device, cfg.precision, busy)}")
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
        steps = cfg.epochs * self.steps_per_epoch  # what the epoch and step budgets allow
        self.total_steps = min(steps, cfg.max_steps) if cfg.max_steps else steps
        self.scheduler = make_scheduler(self.optimizer, cfg, self.total_steps)
        self.fingerprint = resume_fingerprint(
            name, model_cfg, cfg, self.device.type, world.size, vocab, train_tokens, val_tokens, code_fingerprint()
        )

    def run(self) -> dict:
        """Train to the first budget reached, validating every ``eval_every`` steps (0: every epoch)
        and where a budget ends; rank 0 logs each validation point, keeps the best weights and saves
        the resume state, then publishes the outputs. Returns the run's record."""
        cfg, model = self.cfg, self.model
        resumed = self.resume()
        pos, carried = Position(**resumed.get("position", {})), resumed.get("carried")
        history, stale = list(resumed.get("history", [])), resumed.get("stale", 0)
        best = resumed.get("best", {"val_perplexity": math.inf, "step": 0, "epoch": 0.0, "state_dict": None})
        started, elapsed0 = time.perf_counter(), resumed.get("elapsed", 0.0)
        clock = lambda: elapsed0 + time.perf_counter() - started  # noqa: E731 (seconds over interruptions)
        with self.dvclive() as live:
            for row in history:  # replay the validation points of an interrupted run so the logs are whole
                log_point(live, row)
            bar = self.progress_bar(pos.step)
            while True:
                # train to the next validation point: every eval_every steps, else the epoch's end, or a budget's
                model.train()
                seg, at_eval = Segment.on(self.device), False
                stop = self.budget_reached(pos, elapsed=0.0)  # the time budget allows at least one step
                while not (stop or at_eval):
                    if pos.batch == 0:  # a new epoch: its randomness derives from (seed, epoch, rank) alone
                        torch.manual_seed(epoch_seed(cfg.seed, pos.epoch) + self.world.rank)
                        carried = None
                    for X, Y in self.epoch_batches(pos):
                        carried = self.step(X, Y, carried, pos, seg, bar)
                        stop = self.budget_reached(pos, clock())
                        at_eval = cfg.eval_every > 0 and pos.step % cfg.eval_every == 0
                        if stop or at_eval:
                            break
                    else:  # the epoch is done
                        pos.epoch, pos.batch = pos.epoch + 1, 0
                        stop, at_eval = self.budget_reached(pos, clock()), cfg.eval_every == 0
                train_loss, tokens, seconds = self.end_segment(seg, pos)
                if tokens == 0:  # a budget ended right at the last validation point: nothing new to validate
                    break
                row = self.validate(pos, train_loss, tokens, seconds)
                history.append(row)
                log_point(live, row)
                self.log(
                    f"{self.name} step {pos.step} (epoch {row['epoch']:.2f}): train ppl {row['train_perplexity']:.3f}, "
                    f"val ppl {row['val_perplexity']:.3f}, {tokens / seconds:,.0f} tok/s"
                )
                if row["val_perplexity"] < best["val_perplexity"]:
                    best, stale = self.best_point(row), 0
                else:
                    stale += 1
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(row["val_perplexity"])
                stop = stop or ("patience" if cfg.patience and stale >= cfg.patience else None)
                if stop:
                    break
                self.save_resume(pos, carried, history, best, stale, clock())
            bar.close()
            return self.publish(live, history, best, stop)

    # --- training steps ------------------------------------------------------------------
    def budget_reached(self, pos: Position, elapsed: float) -> str | None:
        """The budget that ends training at ``pos``, ``elapsed`` seconds in; None if none. Several
        ranks follow rank 0's clock, looked at every CHECK_EVERY steps (a collective)."""
        cfg = self.cfg
        if pos.epoch >= cfg.epochs:
            return "epochs"
        if cfg.max_steps and pos.step >= cfg.max_steps:
            return "max_steps"
        if not cfg.max_minutes:
            return None
        if self.world.size == 1 or elapsed == 0.0:  # 0.0: a segment's start, on every rank (no collective)
            time_up = elapsed >= cfg.max_minutes * 60
        else:
            time_up = pos.step % CHECK_EVERY == 0 and self.world.broadcast(elapsed >= cfg.max_minutes * 60)
        return "max_minutes" if time_up else None

    def epoch_batches(self, pos: Position):
        """The global minibatches of epoch ``pos.epoch`` (the same on every rank) from ``pos.batch`` on."""
        rng = np.random.default_rng([self.cfg.seed, pos.epoch])
        epoch = batches(self.train_data, self.cfg.batch_size, self.cfg.num_steps, self.cfg.sampling, rng)
        return itertools.islice(epoch, pos.batch, None)

    def step(self, X, Y, carried, pos: Position, seg: Segment, bar):
        """One optimizer step on this rank's rows of (X, Y) from the ``carried`` hidden state (None at
        an epoch's start); advances ``pos``, sums the loss into ``seg``. Returns the new state."""
        cfg, model = self.cfg, self.model
        X, Y = X[self.rows], Y[self.rows]  # this rank's rows (all of them in one process)
        if cfg.sampling == "random" or carried is None:
            carried = model.begin_state(X.shape[0], self.device)  # fresh state per random minibatch
        else:
            carried = detach_state(carried)  # carried across sequential minibatches, cut from the graph
        loss, carried = train_step(
            model, self.optimizer, X, Y, carried, cfg.clip_theta, self.amp_dtype, self.scaler, self.forward
        )
        if cfg.lr_schedule == "cosine":
            self.scheduler.step()
        pos.step, pos.batch = pos.step + 1, pos.batch + 1
        seg.add(loss, Y.numel())
        bar.update(1)
        if len(seg.unchecked) == CHECK_EVERY:
            self.check_finite(seg.unchecked, pos)
            bar.set_postfix(loss=f"{float(seg.unchecked[-1]):.3f}", epoch=pos.epoch + 1)
            seg.unchecked = []
        return carried

    def end_segment(self, seg: Segment, pos: Position) -> tuple[float, int, float]:
        """(mean training loss in nats per token, dropout on; tokens; seconds) over every rank."""
        if seg.unchecked:
            self.check_finite(seg.unchecked, pos)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - seg.start  # (no budget stops before step 1: epochs >= 1, 0 = no budget)
        totals = self.world.gather((float(seg.loss_sum), seg.tokens))  # every rank's share of the global minibatches
        loss_total, tokens = sum(t[0] for t in totals), sum(t[1] for t in totals)
        return loss_total / max(tokens, 1), tokens, seconds

    def fail(self, message: str):
        """An error every rank met at the same point: rank 0 reports it, the others stop quietly."""
        if self.world.writer:
            raise RnnlmError(message)
        raise SystemExit(1)

    def check_finite(self, losses: list, pos: Position) -> None:
        """Stop at the first non-finite loss among the last ``losses`` of any rank."""
        window = torch.stack(losses)
        bad = (~torch.isfinite(window)).nonzero()
        first = pos.step - len(losses) + 1 + int(bad[0, 0]) if len(bad) else None
        steps = [s for s in self.world.gather(first) if s is not None]  # the ranks decide together
        if steps:
            step = min(steps)
            clip = "lower train.clip_theta" if self.cfg.clip_theta > 0 else "set train.clip_theta (e.g. 1.0)"
            self.fail(
                f"{self.name}: training diverged: non-finite loss at step {step} (epoch {pos.epoch + 1}, "
                f"lr={self.optimizer.param_groups[0]['lr']:g}); lower {self.name}.lr or train.lr, or {clip}. "
                "No checkpoint of the diverged state was written."
            )

    # --- validation points -----------------------------------------------------------------
    def validate(self, pos: Position, train_loss: float, tokens: int, seconds: float) -> dict:
        """The history's row of this validation point (stopping if a perplexity overflowed). Rank 0
        scores the val split's first ``eval_tokens`` tokens (all with 0: a bounded cost on a big
        corpus); every rank gets its result."""
        val_ppl = None
        if self.world.writer:
            val = self.val_tokens[: self.cfg.eval_tokens + 1] if self.cfg.eval_tokens else self.val_tokens
            val_ppl = perplexity(*model_nll(self.model, val, EVAL_BATCH, self.cfg.num_steps, self.device))
        val_ppl, train_ppl = self.world.broadcast(val_ppl), perplexity(train_loss, 1)
        if not (math.isfinite(val_ppl) and math.isfinite(train_ppl)):
            self.fail(
                f"{self.name}: training diverged: perplexity overflowed by step {pos.step} (train "
                f"{train_ppl:g}, val {val_ppl:g}); lower {self.name}.lr or train.lr. "
                "No checkpoint of the diverged state was written."
            )
        return {
            "step": pos.step,
            "epoch": round(pos.epoch + pos.batch / self.steps_per_epoch, 4),
            "train_perplexity": train_ppl,
            "val_perplexity": val_ppl,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens": tokens,
            "seconds": seconds,
        }

    def best_point(self, row: dict) -> dict:
        """A new best validation point, with a copy of the weights (rank 0 alone keeps them)."""
        weights = cpu_state_dict(self.model) if self.world.writer else None
        return {**{k: row[k] for k in POINT}, "state_dict": weights}

    def progress_bar(self, step: int) -> tqdm:
        disable = not self.progress if self.progress is not None else None  # None: tqdm decides (a tty)
        return tqdm(total=self.total_steps, initial=step, unit="step", desc=self.name, leave=False, disable=disable)

    # --- files -----------------------------------------------------------------------------
    def model_file(self, state_dict, step: int, val_ppl: float) -> dict:
        return model_payload(self.name, self.model.config, self.vocab, state_dict, step, val_ppl, self.cfg.precision)

    def resume(self) -> dict:
        """The resume state rank 0 found for this run (shared with every rank), loaded into this
        rank's objects, its ``carried`` state cut to this rank's rows; {}: start over."""
        found = read_resume(self.paths.resume, self.fingerprint, self.name, self.log) if self.world.writer else None
        ckpt = self.world.broadcast(found)
        if ckpt is None:
            return {}
        restore_resume(ckpt, self.model, self.optimizer, self.scheduler, self.scaler, self.world.rank, self.device)
        if ckpt["carried"] is not None:  # this rank's rows of the whole minibatch's state
            carried = [t[:, self.rows].to(self.device) for t in ckpt["carried"]]
            ckpt["carried"] = tuple(carried) if len(carried) > 1 else carried[0]
        return ckpt

    def save_resume(self, pos: Position, carried, history: list, best: dict, stale: int, elapsed: float) -> None:
        """Rank 0 writes the state of every rank: its random state and its rows of the carried state."""
        rng = rng_state(self.device)
        if carried is not None:
            carried = [t.detach().cpu() for t in (carried if isinstance(carried, tuple) else (carried,))]
        ranks = self.world.gather((rng, carried))
        if not self.world.writer:
            return
        if carried is not None:  # (layers, rows, hidden) blocks -> the whole minibatch's state
            carried = [torch.cat([c[i] for _, c in ranks], dim=1) for i in range(len(carried))]
        progress = {"position": asdict(pos), "carried": carried, "rng": [r for r, _ in ranks]}
        progress |= {"history": history, "best": best, "stale": stale, "elapsed": elapsed}
        model_file = self.model_file(cpu_state_dict(self.model), pos.step, history[-1]["val_perplexity"])
        payload = resume_payload(model_file, self.fingerprint, self.optimizer, self.scheduler, self.scaler, progress)
        save_checkpoint(self.paths.resume, payload)

    @contextlib.contextmanager
    def dvclive(self):
        """Rank 0's DVCLive logger (None on the other ranks). It writes to the staging directory,
        which :meth:`publish` moves in place; a failed run leaves the last run's metrics as they were."""
        if not self.world.writer:
            yield None
            return
        from dvclive import Live  # imported here: keeps `import rnnlm.train` light for tests

        staging = self.paths.live_staging
        made_dir = not staging.parent.exists()
        shutil.rmtree(staging, ignore_errors=True)
        live = Live(dir=str(staging), dvcyaml=False, save_dvc_exp=False)
        try:
            yield live
        finally:  # published, or the run failed: no staging directory stays
            shutil.rmtree(staging, ignore_errors=True)
            if made_dir:
                with contextlib.suppress(OSError):
                    staging.parent.rmdir()  # checkpoints/, made for it and empty again

    def publish(self, live, history: list, best: dict, stop: str) -> dict:
        """The run's record. Rank 0 writes the best and last model files, the DVCLive summary and the
        timing record, puts the metrics in place and deletes the resume state."""
        files, last = self.paths, history[-1]
        tokens, seconds = sum(r["tokens"] for r in history), sum(r["seconds"] for r in history)
        timing = {
            "train_seconds": round(seconds, 3),
            "tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1),
            "device": str(self.device),
            "cpu_capability": cpu_capability(),
            "threads": torch.get_num_threads(),
            "precision": self.cfg.precision,
            "nproc": self.world.size,
        }
        point = {k: best[k] for k in POINT}
        result = {**{f"best_{k}": v for k, v in point.items()}, "stopped_by": stop, "history": history, **timing}
        if not self.world.writer:
            return result
        live.step = last["step"]  # next_step() left it one past the last point; the summary's step is the last one
        save_checkpoint(files.best, self.model_file(best["state_dict"], best["step"], best["val_perplexity"]))
        save_checkpoint(files.last, self.model_file(cpu_state_dict(self.model), last["step"], last["val_perplexity"]))
        live.summary.update(best=point, params=num_parameters(self.model), steps=last["step"], epochs=last["epoch"])
        live.summary["stopped_by"] = stop
        live.make_summary()
        live.end()
        replace_dir(files.live_staging, files.live_dir)
        write_json(files.timing, timing)  # beside the metrics: a retrain's new timings change no stage's input
        files.resume.unlink(missing_ok=True)
        return result
