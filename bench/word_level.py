"""Word-level training throughput at a 10k vocabulary: the full softmax against the adaptive one.

Trains a 2-layer LSTM (hidden 256, batch 20 x 35 steps, Adam) on the Penn Treebank's train
split (10,000 words) with the project's own training step (``rnnlm.train.train_step``), for a
fixed number of steps per configuration, the configurations interleaved over several repeats:

* ``full, emb 32`` -- the default model section (embedding 32, full softmax), the word-level
  setup before the adaptive softmax existed;
* ``full, tied`` -- an embedding of the hidden size (256) tied to the decoder (Press & Wolf 2017);
* ``adaptive`` -- ``nn.AdaptiveLogSoftmaxWithLoss`` (head of 2,000 words, one tail cluster);
* ``adaptive, bf16`` -- the same under bfloat16 autocast (only where the CPU or GPU has it natively):
  the PTB recipe's LSTM.

Reports tokens/s (best of the repeats) and each configuration's ratio to ``full, emb 32``
(median and range over the repeats). Writes ``metrics/bench_word.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnlm.device import bf16_native, cpu_capability  # noqa: E402
from rnnlm.models import RNNLM, detach_state  # noqa: E402
from rnnlm.train import train_step  # noqa: E402
from rnnlm.vocab import Vocab, tokenize  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ptb.train.txt"
HIDDEN = None  # an embedding as wide as the hidden layer (needed by tie_weights)
CONFIGS = {
    "full, emb 32": dict(embedding=32),
    "full, tied": dict(embedding=HIDDEN, tie_weights=True),
    "adaptive": dict(embedding=HIDDEN, softmax="adaptive"),
    "adaptive, bf16": dict(embedding=HIDDEN, softmax="adaptive", amp=torch.bfloat16),
}


def load_ids(path: Path) -> tuple[int, torch.Tensor]:
    tokens = tokenize(path.read_text(encoding="utf-8"), "word", "whitespace", eos=True)
    vocab = Vocab.build(tokens, "word")
    return len(vocab), torch.from_numpy(vocab.encode(tokens))


def make_runner(cfg: dict, vocab_size: int, ids: torch.Tensor, args):
    cfg = dict(cfg)
    amp = cfg.pop("amp", None)
    if cfg["embedding"] is HIDDEN:
        cfg["embedding"] = args.hidden
    torch.manual_seed(0)
    model = RNNLM("lstm", "torch", vocab_size, hidden=args.hidden, layers=2, dropout=0.2, **cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = args.batch_size * args.num_steps
    position = {"i": 0, "state": None}

    def steps(count: int) -> float:
        """Train ``count`` steps; return the seconds they took (loss read back at the end)."""
        start = time.perf_counter()
        for _ in range(count):
            i = position["i"] % ((len(ids) - 1) // n)
            X = ids[i * n : (i + 1) * n].reshape(args.batch_size, -1)
            Y = ids[i * n + 1 : (i + 1) * n + 1].reshape(args.batch_size, -1)
            state = detach_state(position["state"]) if position["state"] is not None else None
            loss, position["state"] = train_step(model, optimizer, X, Y, state, 0.25, amp)
            position["i"] += 1
        float(loss)
        return time.perf_counter() - start

    return steps


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab_size, ids = load_ids(args.data)
    names = [n for n in CONFIGS if "bf16" not in n or bf16_native(torch.device("cpu"))]
    runners = {n: make_runner(CONFIGS[n], vocab_size, ids, args) for n in names}
    for r in runners.values():
        r(args.warmup)
    seconds = {n: [] for n in names}
    for _ in range(args.repeats):  # interleaved: drift of the machine's speed hits every config alike
        for n, r in runners.items():
            seconds[n].append(r(args.steps))
    tokens = args.steps * args.batch_size * args.num_steps
    base = names[0]
    rows = []
    for n in names:
        ratios = [b / s for s, b in zip(seconds[n], seconds[base])]
        rows.append(
            {
                "config": n,
                "tokens_per_second": round(tokens / min(seconds[n]), 1),
                "ratio_to_full": round(statistics.median(ratios), 3),
                "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            }
        )
    return {
        "vocab_size": vocab_size,
        "hidden": args.hidden,
        "batch_size": args.batch_size,
        "num_steps": args.num_steps,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": cpu_capability(),
        "rows": rows,
    }


def markdown(report: dict) -> str:
    lines = [
        f"Word-level LSTM 2x{report['hidden']}, V = {report['vocab_size']:,}, batch {report['batch_size']} x "
        f"{report['num_steps']}, {report['threads']} threads, CPU capability {report['cpu_capability']}",
        "",
        "| config | tokens/s | ratio to full, emb 32 (median, range) |",
        "|---|---:|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['config']} | {r['tokens_per_second']:,.0f} | {r['ratio_to_full']:.2f} "
            f"({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a whitespace-tokenized text (PTB train)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--num-steps", type=int, default=35)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench_word.json")
    args = ap.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report), end="")
    return report


if __name__ == "__main__":
    main()
