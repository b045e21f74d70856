"""Training throughput of the project's models against the textbook's own formulation.

``make bench`` trains every cell (rnn, lstm, gru) x impl (scratch, torch) of ``rnnlm.models``
for a fixed number of steps on the time machine train split with the textbook's shapes
(batch 32, num_steps 35, hidden 256, char level, one-hot inputs) and, beside each, the
formulation of "Dive into Deep Learning" re-implemented here:

* scratch: ``RNNScratch`` / ``LSTMScratch`` / ``GRUScratch`` -- one-hot inputs
  ``F.one_hot(X.T, V).float()``, a Python loop over time steps with separate ``W_x*``, ``W_h*``
  per gate (two matmuls per gate and step), the output layer applied per time step;
* torch ("concise"): ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` fed one-hot inputs, then ``nn.Linear``;

both trained the d2l way: a host sync for the loss every step (``loss.item()``). The project side
runs ``rnnlm.train.train_step``, the step of the Trainer (no host sync). Both sides use the same data
(``rnnlm.batching.sequential_batches``, same seed, state carried and detached), the same
optimizer (SGD lr 1 as in the book, or Adam) and the same clipping (``clip_grad_norm_`` 1.0).

Precision: every row is float32 on both sides, plus, where the device computes bfloat16 in
hardware (CPU: AVX512-BF16/AMX; CUDA: Ampere or newer), a row per cell for the project's torch
impl with ``train.precision: bf16`` (autocast) against the same float32 reference
(``--precisions fp32`` leaves them out). On CPU, autocast runs nn.LSTM and nn.RNN in bfloat16
(oneDNN) but leaves nn.GRU in float32, apart from the decoder; only the LSTM gets faster.

Timing is interleaved: every (cell, impl, side) runner is warmed up, then each repeat runs
``--steps`` steps of every runner in a rotating order, so all runners see the same machine load.
Other processes can only add time, so tokens/s is taken from each runner's fastest repeat
(best of ``--repeats``) and the ratio from those; the median of the per-repeat ratios and their
range are reported beside it to show the noise. On a busy machine use ``--threads 1``.
Peak memory is measured for each runner in a fresh subprocess (CPU: peak RSS above the
baseline via /proc/self/status VmHWM, reset through /proc/self/clear_refs, or ru_maxrss as a
fallback; CUDA: ``torch.cuda.max_memory_allocated``).

Usage: ``.venv/bin/python bench/throughput.py [--steps 20] [--repeats 5] [--threads 0]
[--device auto] [--precisions fp32 bf16] [--quick] [--out metrics/bench.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from rnnlm.batching import sequential_batches  # noqa: E402
from rnnlm.device import bf16_native, cpu_capability  # noqa: E402
from rnnlm.fileio import write_json  # noqa: E402
from rnnlm.metrics import model_nll  # noqa: E402
from rnnlm.models import CELLS, IMPLS, RNNLM, detach_state  # noqa: E402
from rnnlm.train import train_step  # noqa: E402
from rnnlm.vocab import Vocab, split_bounds, tokenize  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "timemachine.txt"
BATCH, NUM_STEPS, HIDDEN = 32, 35, 256  # the textbook's shapes
CLIP = 1.0
EVAL_BATCH = 16  # evaluate.batch_size > 1: parallel streams (the default, 1, is exact and slower)
PRECISIONS = ("fp32", "bf16")
TARGETS = {
    "lstm_torch_vs_reference": 1.3,
    "scratch_vs_reference": 1.5,
    "scratch_lstm_vs_torch_lstm": 0.5,
    "lstm_tokens_per_second": 100_000,
}


# --- data ----------------------------------------------------------------------------------
def d2l_clean(text: str) -> str:
    """The d2l rule per line, empty lines dropped, lines joined with a space."""
    lines = (re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.splitlines())
    return " ".join(line for line in lines if line)


def load_splits(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """Char tokens of the cleaned text; the vocabulary of the first 90% (train); returns V, train, val."""
    tokens = tokenize(d2l_clean(Path(path).read_text(encoding="utf-8")), "char")
    s_train, s_val, _ = split_bounds(len(tokens), (0.9, 0.05, 0.05))
    vocab = Vocab.build(tokens[s_train], "char")
    return len(vocab), vocab.encode(tokens[s_train]), vocab.encode(tokens[s_val])


def batch_list(
    train: np.ndarray, n: int, batch_size: int = BATCH, num_steps: int = NUM_STEPS, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` minibatches of sequential partitioning (epochs chained if needed)."""
    out, epoch = [], 0
    while len(out) < n:
        batches = sequential_batches(train, batch_size, num_steps, np.random.default_rng([seed, epoch]))
        out.extend((X.long(), Y.long()) for X, Y in batches)  # int64 ids, as the book's one_hot needs
        epoch += 1
    return out[:n]


# --- the textbook's formulation --------------------------------------------------------------
class D2LScratch(nn.Module):
    """d2l's RNNLMScratch around RNNScratch / LSTMScratch / GRUScratch (sigma = 0.01 init)."""

    GATES = {"rnn": ("h",), "lstm": ("i", "f", "o", "c"), "gru": ("z", "r", "h")}

    def __init__(self, cell: str, vocab_size: int, hidden: int, sigma: float = 0.01):
        super().__init__()
        self.cell, self.vocab_size, self.hidden = cell, vocab_size, hidden

        def init(*shape):
            return nn.Parameter(torch.randn(*shape) * sigma)

        for g in self.GATES[cell]:
            setattr(self, f"W_x{g}", init(vocab_size, hidden))
            setattr(self, f"W_h{g}", init(hidden, hidden))
            setattr(self, f"b_{g}", nn.Parameter(torch.zeros(hidden)))
        self.W_hq = init(hidden, vocab_size)
        self.b_q = nn.Parameter(torch.zeros(vocab_size))

    def begin_state(self, batch_size, device=None):
        h = torch.zeros(batch_size, self.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, X, state):
        inputs = F.one_hot(X.T, self.vocab_size).float()
        outputs = []
        if self.cell == "rnn":
            H = state
            for X_t in inputs:
                H = torch.tanh(torch.matmul(X_t, self.W_xh) + torch.matmul(H, self.W_hh) + self.b_h)
                outputs.append(H)
            state = H
        elif self.cell == "lstm":
            H, C = state
            for X_t in inputs:
                I = torch.sigmoid(torch.matmul(X_t, self.W_xi) + torch.matmul(H, self.W_hi) + self.b_i)
                Fg = torch.sigmoid(torch.matmul(X_t, self.W_xf) + torch.matmul(H, self.W_hf) + self.b_f)
                O = torch.sigmoid(torch.matmul(X_t, self.W_xo) + torch.matmul(H, self.W_ho) + self.b_o)
                C_tilde = torch.tanh(torch.matmul(X_t, self.W_xc) + torch.matmul(H, self.W_hc) + self.b_c)
                C = Fg * C + I * C_tilde
                H = O * torch.tanh(C)
                outputs.append(H)
            state = (H, C)
        else:
            H = state
            for X_t in inputs:
                Z = torch.sigmoid(torch.matmul(X_t, self.W_xz) + torch.matmul(H, self.W_hz) + self.b_z)
                R = torch.sigmoid(torch.matmul(X_t, self.W_xr) + torch.matmul(H, self.W_hr) + self.b_r)
                H_tilde = torch.tanh(torch.matmul(X_t, self.W_xh) + torch.matmul(R * H, self.W_hh) + self.b_h)
                H = Z * H + (1 - Z) * H_tilde
                outputs.append(H)
            state = H
        # d2l's output_layer: one matmul per time step, stacked along the time axis
        return torch.stack([torch.matmul(H, self.W_hq) + self.b_q for H in outputs], 1), state


class D2LConcise(nn.Module):
    """d2l's concise RNNLM: nn.RNN / nn.LSTM / nn.GRU on one-hot inputs, then nn.Linear."""

    def __init__(self, cell: str, vocab_size: int, hidden: int):
        super().__init__()
        self.cell, self.vocab_size, self.hidden = cell, vocab_size, hidden
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](vocab_size, hidden)
        self.linear = nn.Linear(hidden, vocab_size)

    def begin_state(self, batch_size, device=None):
        h = torch.zeros(1, batch_size, self.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, X, state):
        outputs, state = self.rnn(F.one_hot(X.T, self.vocab_size).float(), state)
        return self.linear(outputs).swapaxes(0, 1), state


REFERENCE_NAMES = {
    "scratch": "d2l {Cell}Scratch (one-hot, per-gate matmuls)",
    "torch": "d2l concise nn.{CELL} (one-hot)",
}


def reference_name(cell: str, impl: str) -> str:
    return REFERENCE_NAMES[impl].format(Cell=cell.upper() if cell != "lstm" else "LSTM", CELL=cell.upper())


# --- runners: one model + optimizer + state + data cursor --------------------------------------
class Runner:
    """Trains one model step by step on a fixed list of minibatches.

    side "project": RNNLM and rnnlm.train.train_step (losses stay on the device), in
    ``precision`` fp32 or bf16 (autocast); side "reference": the d2l model and d2l's
    train_epoch step (``loss.item()`` every step), always fp32.
    """

    def __init__(
        self,
        cell,
        impl,
        side,
        precision,
        vocab_size,
        batches,
        device,
        optimizer="sgd",
        lr=None,
        embedding=0,
        hidden=HIDDEN,
        seed=0,
    ):
        self.cell, self.impl, self.side, self.V = cell, impl, side, vocab_size
        self.amp_dtype = torch.bfloat16 if precision == "bf16" else None
        self.batches, self.device, self.i = batches, device, 0
        torch.manual_seed(seed)
        if side == "project":
            model = RNNLM(cell, impl, vocab_size, hidden=hidden, layers=1, dropout=0.0, embedding=embedding)
        elif impl == "scratch":
            model = D2LScratch(cell, vocab_size, hidden)
        else:
            model = D2LConcise(cell, vocab_size, hidden)
        self.model = model.to(device).train()
        lr = lr if lr is not None else (1.0 if optimizer == "sgd" else 0.003)
        cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        self.optimizer = cls(self.model.parameters(), lr=lr)
        self.state = None
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.host_loss_sum = 0.0
        self.tokens = 0

    def _next_batch(self):
        X, Y = self.batches[self.i % len(self.batches)]
        self.i += 1
        return X.to(self.device, non_blocking=True), Y.to(self.device, non_blocking=True)

    def step(self) -> None:
        X, Y = self._next_batch()
        model, opt = self.model, self.optimizer
        if self.state is None:
            self.state = model.begin_state(X.shape[0], self.device)
        else:
            self.state = detach_state(self.state)
        if self.side == "project":
            loss, self.state = train_step(model, opt, X, Y, self.state, CLIP, self.amp_dtype)
            self.loss_sum += loss.double() * Y.numel()  # no host sync (as rnnlm.train)
        else:
            logits, self.state = model(X, self.state)
            loss = F.cross_entropy(logits.reshape(-1, self.V), Y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            self.host_loss_sum += loss.item() * Y.numel()  # d2l: metric.add(l * y.numel(), ...)
        self.tokens += Y.numel()

    def run(self, steps: int) -> float:
        """Run ``steps`` steps; return the seconds taken (device synchronised)."""
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return time.perf_counter() - start

    def mean_loss(self) -> float:
        total = float(self.loss_sum) if self.side == "project" else self.host_loss_sum
        return total / max(self.tokens, 1)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- memory, in a fresh process per runner --------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_probe(args, cell, impl, side, precision="fp32") -> dict:
    """Peak memory of a few training steps of one runner (run in a fresh subprocess)."""
    device = resolve_device(args.device)
    V, train, _ = load_splits(args.data)
    batches = batch_list(train, args.warmup + args.memory_steps, args.batch_size, args.num_steps)
    runner = Runner(
        cell, impl, side, precision, V, batches, device, args.optimizer, args.lr, args.embedding, args.hidden
    )
    steps = args.warmup + args.memory_steps
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        runner.run(steps)
        return {
            "peak_mb": round((torch.cuda.max_memory_allocated() - base) / 2**20, 2),
            "method": "torch.cuda.max_memory_allocated above the allocation before training",
        }
    if _reset_peak_rss() and _proc_status_kb("VmHWM") is not None:
        base = _proc_status_kb("VmRSS")
        runner.run(steps)
        peak = _proc_status_kb("VmHWM")
        return {
            "peak_mb": round((peak - base) / 1024, 2),
            "peak_rss_mb": round(peak / 1024, 1),
            "method": "VmHWM (reset via /proc/self/clear_refs) above the RSS before training",
        }
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runner.run(steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_mb = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "peak_mb": round((peak - base) / per_mb, 2),
        "peak_rss_mb": round(peak / per_mb, 1),
        "method": "ru_maxrss above its value before training",
    }


def measure_memory(args, cell, impl, side, precision) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        cell,
        impl,
        side,
        precision,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--data",
        str(args.data),
        "--optimizer",
        args.optimizer,
        "--embedding",
        str(args.embedding),
        "--warmup",
        str(args.warmup),
        "--memory-steps",
        str(args.memory_steps),
        "--batch-size",
        str(args.batch_size),
        "--num-steps",
        str(args.num_steps),
        "--hidden",
        str(args.hidden),
    ]
    if args.lr is not None:
        cmd += ["--lr", str(args.lr)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"peak_mb": None, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- evaluation throughput -----------------------------------------------------------------
@torch.no_grad()
def one_token_nll(model, tokens: np.ndarray, device) -> tuple[float, int]:
    """NLL of tokens[1:] fed one token at a time (batch 1, state carried): the naive way."""
    model.eval()
    ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device)
    state, total = None, 0.0
    for i in range(len(ids) - 1):
        logits, state = model(ids[i].view(1, 1), state)
        total += float(F.cross_entropy(logits.reshape(1, -1), ids[i + 1].view(1)))
    model.train()
    return total, len(ids) - 1


def eval_rows(args, vocab_size, val, device) -> list[dict]:
    """tokens/s of rnnlm.metrics.model_nll (batched streams) vs one token at a time, LSTM.

    The two differ slightly in value: model_nll starts each of its streams from a zero state."""
    tokens = val[: args.eval_tokens]
    rows = []
    for impl in args.impls:
        torch.manual_seed(0)
        model = RNNLM("lstm", impl, vocab_size, hidden=args.hidden, layers=1, dropout=0.0, embedding=args.embedding).to(
            device
        )
        model_nll(model, tokens[:50], EVAL_BATCH, args.num_steps, device)  # warm-up
        times, nll = {"batched": [], "one_token": []}, {}
        for _ in range(max(1, min(args.repeats, 3))):
            sync(device)
            t = time.perf_counter()
            nll["batched"] = model_nll(model, tokens, EVAL_BATCH, args.num_steps, device)
            sync(device)
            times["batched"].append(time.perf_counter() - t)
            t = time.perf_counter()
            nll["one_token"] = one_token_nll(model, tokens, device)
            times["one_token"].append(time.perf_counter() - t)
        n = nll["batched"][1]
        tps = {k: n / statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "cell": "lstm",
                "impl": impl,
                "tokens": n,
                "batched_tokens_per_s": round(tps["batched"], 1),
                "one_token_tokens_per_s": round(tps["one_token"], 1),
                "ratio": round(tps["batched"] / tps["one_token"], 2),
                "batched_ppl": round(math.exp(nll["batched"][0] / n), 4),
                "one_token_ppl": round(math.exp(nll["one_token"][0] / nll["one_token"][1]), 4),
            }
        )
    return rows


# --- the benchmark ---------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def busy(before, after) -> bool:
    """Whether other processes used the CPUs, from the 1-minute load averages: before the run,
    above the cores this run leaves free; after it, above all cores (the run's own threads count
    in that one)."""
    cores = os.cpu_count() or 1
    spare = cores - torch.get_num_threads()
    return bool((before is not None and before[0] > spare + 0.5) or (after is not None and after[0] > cores + 0.5))


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def runner_keys(args) -> list[tuple[str, str, str, str]]:
    """(cell, impl, side, precision) of every runner: project and reference in fp32 for each
    cell x impl, and the project's torch impl in each further precision of ``args.precisions``."""
    keys = []
    for c in args.cells:
        for i in args.impls:
            keys += [(c, i, "project", "fp32"), (c, i, "reference", "fp32")]
            if i == "torch":
                keys += [(c, i, "project", p) for p in args.precisions if p != "fp32"]
    return keys


def time_runners(args, vocab_size, train, device) -> tuple[dict, dict]:
    """Interleaved timing. Returns {key: [seconds per repeat]} and {key: mean training loss}."""
    batches = batch_list(train, args.warmup + args.steps * args.repeats, args.batch_size, args.num_steps)
    keys = runner_keys(args)
    runners = {
        k: Runner(*k, vocab_size, batches, device, args.optimizer, args.lr, args.embedding, args.hidden) for k in keys
    }
    for k in keys:
        runners[k].run(args.warmup)
    seconds = {k: [] for k in keys}
    for r in range(args.repeats):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]  # rotate, and reverse every other repeat
        for k in order[::-1] if r % 2 else order:
            seconds[k].append(runners[k].run(args.steps))
        if args.verbose:
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    return seconds, {k: runners[k].mean_loss() for k in keys}


def build_report(args, seconds, losses, memory, evals, device, load_before, load_after, wall) -> dict:
    tok = args.batch_size * args.num_steps * args.steps
    rows = []
    for cell, impl, side, precision in seconds:
        if side != "project":
            continue
        key, ref_key = (cell, impl, side, precision), (cell, impl, "reference", "fp32")
        p, ref = seconds[key], seconds[ref_key]
        ratios = [b / a for a, b in zip(p, ref)]  # per repeat: project tok/s / reference tok/s
        rows.append(
            {
                "cell": cell,
                "impl": impl,
                "precision": precision,
                "project_tokens_per_s": round(tok / min(p), 1),
                "reference": reference_name(cell, impl),
                "reference_tokens_per_s": round(tok / min(ref), 1),
                "ratio": round(min(ref) / min(p), 3),
                "project_tokens_per_s_median": round(tok / statistics.median(p), 1),
                "reference_tokens_per_s_median": round(tok / statistics.median(ref), 1),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "project_peak_mb": memory.get(key, {}).get("peak_mb"),
                "reference_peak_mb": memory.get(ref_key, {}).get("peak_mb"),
                "project_loss": round(losses[key], 4),
                "reference_loss": round(losses[ref_key], 4),
            }
        )
    by = {(r["cell"], r["impl"], r["precision"]): r for r in rows}
    targets = []

    def target(name, value, threshold, note):
        met = None if value is None else bool(value >= threshold)
        targets.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "threshold": threshold,
                "met": met,
                "note": note,
            }
        )

    for precision in PRECISIONS:
        if ("lstm", "torch", precision) in by:
            name = "lstm_torch_vs_reference" + ("" if precision == "fp32" else f" ({precision})")
            target(
                name,
                by[("lstm", "torch", precision)]["ratio"],
                TARGETS["lstm_torch_vs_reference"],
                f"project LSTM (torch impl, {precision}) tokens/s / d2l concise nn.LSTM (fp32) tokens/s",
            )
    for cell in args.cells:
        if (cell, "scratch", "fp32") in by:
            target(
                f"{cell}_scratch_vs_reference",
                by[(cell, "scratch", "fp32")]["ratio"],
                TARGETS["scratch_vs_reference"],
                f"project scratch {cell} tokens/s / d2l {cell} scratch tokens/s",
            )
    scratch_vs_torch = None
    if ("lstm", "scratch", "fp32") in by and ("lstm", "torch", "fp32") in by:
        s, t = seconds[("lstm", "scratch", "project", "fp32")], seconds[("lstm", "torch", "project", "fp32")]
        scratch_vs_torch = min(t) / min(s)
        target(
            "scratch_lstm_vs_torch_lstm",
            scratch_vs_torch,
            TARGETS["scratch_lstm_vs_torch_lstm"],
            "project scratch LSTM tokens/s / project torch LSTM tokens/s (both fp32)",
        )
    for (cell, impl, precision), row in by.items():
        if cell == "lstm":
            target(
                f"lstm_{impl}_tokens_per_s{'' if precision == 'fp32' else f' ({precision})'} (longer term)",
                row["project_tokens_per_s"],
                TARGETS["lstm_tokens_per_second"],
                "absolute tokens/s, LSTM hidden 256",
            )
    return {
        "rows": rows,
        "eval": evals,
        "scratch_lstm_vs_torch_lstm": None if scratch_vs_torch is None else round(scratch_vs_torch, 3),
        "targets": targets,
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "memory_steps": None if args.no_memory else args.memory_steps,
            "batch_size": args.batch_size,
            "num_steps": args.num_steps,
            "hidden": args.hidden,
            "precisions": list(args.precisions),
            "precision_note": args.precision_note,
            "vocab_size": args.vocab_size,
            "embedding": args.embedding,
            "optimizer": args.optimizer,
            "lr": args.lr if args.lr is not None else (1.0 if args.optimizer == "sgd" else 0.003),
            "clip_grad_norm": CLIP,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "cpu_capability": cpu_capability(),
            "cpu_count": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "busy": busy(load_before, load_after),
            "wall_seconds": round(wall, 1),
            "data": str(args.data),
            "quick": args.quick,
        },
    }


def markdown(report) -> str:
    import pandas as pd

    df = pd.DataFrame(report["rows"])
    df["per repeat"] = [
        f"{r:.2f} ({lo:.2f}-{hi:.2f})" for r, lo, hi in zip(df["ratio_median"], df["ratio_min"], df["ratio_max"])
    ]
    cols = {
        "cell": "cell",
        "impl": "impl",
        "precision": "project precision",
        "project_tokens_per_s": "project tok/s",
        "reference": "reference",
        "reference_tokens_per_s": "reference tok/s",
        "ratio": "project/reference",
        "per repeat": "per repeat: median (min-max)",
        "project_peak_mb": "project peak MB",
        "reference_peak_mb": "reference peak MB",
    }
    for c in ("project_tokens_per_s", "reference_tokens_per_s"):
        df[c] = df[c].map("{:,.0f}".format)
    df["ratio"] = df["ratio"].map("{:.2f}".format)
    for c in ("project_peak_mb", "reference_peak_mb"):
        df[c] = df[c].map(lambda v: "n/a" if v is None or v != v else f"{v:.0f}")
    text = [df[list(cols)].rename(columns=cols).to_markdown(index=False, disable_numparse=True)]
    if report["scratch_lstm_vs_torch_lstm"] is not None:
        text.append(f"\nscratch LSTM / torch LSTM (project): {report['scratch_lstm_vs_torch_lstm']:.2f}")
    if report["eval"]:
        ev = pd.DataFrame(report["eval"]).rename(
            columns={
                "batched_tokens_per_s": "model_nll tok/s",
                "one_token_tokens_per_s": "one-token-at-a-time tok/s",
                "batched_ppl": "model_nll ppl",
                "one_token_ppl": "one-token ppl",
            }
        )
        text.append("\nEvaluation over the val split (rnnlm.metrics.model_nll vs one token at a time, LSTM):\n")
        text.append(ev.to_markdown(index=False, floatfmt=",.2f"))
    tg = pd.DataFrame(report["targets"])
    tg["met"] = tg["met"].map({True: "yes", False: "NO", None: "n/a"})
    text.append("\nTargets:\n")
    text.append(tg[["target", "value", "threshold", "met"]].to_markdown(index=False))
    s = report["settings"]
    text.append(
        f"\n{s['steps']} timed steps x {s['repeats']} interleaved repeats (+{s['warmup']} warm-up) per runner, "
        f"batch {s['batch_size']} x {s['num_steps']} steps, hidden {s['hidden']}, V={s['vocab_size']}, "
        f"{s['optimizer']} lr {s['lr']}, device {s['device']} (CPU capability {s['cpu_capability']}), "
        f"{s['threads']} threads, torch {s['torch']}, "
        f"load average before {s['loadavg_before']} after {s['loadavg_after']}, {s['wall_seconds']} s"
        "; tok/s: best of the repeats"
    )
    if s["precision_note"]:
        text.append(s["precision_note"] + ".")
    if s["busy"]:
        text.append(
            "WARNING: other processes were using the CPUs (load average above the cores this run left "
            "free): the numbers are noisy; rerun on an idle machine"
            + ("." if s["threads"] == 1 else ", or with --threads 1.")
        )
    return "\n".join(text)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per runner and repeat")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per runner first")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument(
        "--quick", action="store_true", help="tiny shapes and a few steps, for smoke tests (the numbers mean nothing)"
    )
    ap.add_argument("--out", default="metrics/bench.json", help="JSON report (relative to the repo root)")
    ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="project-side precisions (the torch impl gets a row per precision beyond fp32; "
        "bf16 is skipped where the device has no native bfloat16)",
    )
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="default: 1 for sgd (the book), 0.003 for adam")
    ap.add_argument(
        "--embedding",
        type=int,
        default=0,
        help="project models' embedding size; 0 = one-hot inputs, the reference's maths",
    )
    ap.add_argument("--batch-size", type=int, default=BATCH)
    ap.add_argument("--num-steps", type=int, default=NUM_STEPS)
    ap.add_argument("--hidden", type=int, default=HIDDEN)
    ap.add_argument("--memory-steps", type=int, default=5, help="steps after warm-up in the memory probes")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--eval-tokens", type=int, default=3000, help="val tokens in the eval rows; 0 = skip")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the time machine text (mirror)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--memory-probe", nargs=4, metavar=("CELL", "IMPL", "SIDE", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.warmup, args.memory_steps = 2, 2, 1, 1
        args.batch_size, args.num_steps, args.hidden = 4, 5, 16
        args.eval_tokens = min(args.eval_tokens, 60)
    if not args.data.is_absolute() and (ROOT / args.data).exists():
        args.data = ROOT / args.data
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args, *args.memory_probe)))
        return None
    if not args.data.exists():
        raise SystemExit(f"{args.data}: not found (the corpus mirror beside the project root)")
    device = resolve_device(args.device)
    args.precision_note = None
    if "bf16" in args.precisions and not bf16_native(device):
        args.precisions = [p for p in args.precisions if p != "bf16"]
        args.precision_note = f"bf16 rows left out: this {device.type} has no native bfloat16 matmuls"
    if "fp32" not in args.precisions:
        args.precisions = ["fp32", *args.precisions]  # the fp32 rows are the comparison every target uses
    start, load_before = time.perf_counter(), loadavg()
    V, train, val = load_splits(args.data)
    args.vocab_size = V
    seconds, losses = time_runners(args, V, train, device)
    evals = eval_rows(args, V, val, device) if args.eval_tokens > 1 else []
    memory = {} if args.no_memory else {k: measure_memory(args, *k) for k in seconds}
    report = build_report(
        args, seconds, losses, memory, evals, device, load_before, loadavg(), time.perf_counter() - start
    )
    out = Path(args.out)
    write_json(out if out.is_absolute() else ROOT / out, report)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
