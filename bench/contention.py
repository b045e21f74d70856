"""Training throughput beside a competing busy process, as a ratio to the idle run.

Runs the real train stage (``python -m stages.train lstm``, as ``bench/processes.py`` does: the
committed params.yaml, a step budget, a temporary copy of data/) idle and then beside ``--busy``
processes that each spin one core, in three settings:

* ``default``: what a user gets (``train.threads: 0``): all cores less those busy at the start,
  with the short OpenMP spin that ``import rnnlm`` sets (GOMP_SPINCOUNT=1000);
* ``before``: what ran before: all cores, whatever else runs, with libgomp's own spin count
  (300,000);
* ``1 thread``: ``train.threads: 1``.

It reports each setting's training tokens/s idle and busy and the slowdown idle / busy. With one
busy process on 2 cores the scheduler gives the run's two threads about 2/3 of the machine, so
about 1.5x is the floor for a run that used both cores well when idle.

Usage: ``make bench`` or ``.venv/bin/python bench/contention.py [--steps 100] [--busy 1] [--model lstm]``
(needs data/vocab.json and data/tokens: ``dvc repro vocab``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

from processes import cpu_name, run

from rnnlm import distributed
from rnnlm.device import cpu_capability

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name: (train.threads, extra environment); None = all cores
    "default": (0, {}),
    "before": (None, {"GOMP_SPINCOUNT": "300000"}),
    "1 thread": (1, {}),
}


def spin() -> None:
    while True:
        pass


def measure(model: str, steps: int, threads: int, env: dict, busy: int) -> dict:
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.5 if busy else 0)
        return run(model, steps, 1, threads, env)
    finally:
        for p in spinners:
            p.terminate()
            p.join()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--busy", type=int, default=1, help="competing processes, each spinning one core")
    parser.add_argument("--model", default="lstm", choices=("rnn", "lstm", "gru"))
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench_contention.json")
    args = parser.parse_args(argv)
    if not (ROOT / "data" / "tokens").is_dir():
        sys.exit("error: data/tokens is missing; run `dvc repro vocab` first")
    cores = distributed.cores()
    rows = []
    for name, (threads, env) in SETTINGS.items():
        threads = cores if threads is None else threads
        idle = measure(args.model, args.steps, threads, env, 0)
        busy = measure(args.model, args.steps, threads, env, args.busy)
        rows.append(
            {
                "setting": name,
                "threads_idle": idle["threads"],
                "threads_busy": busy["threads"],
                "idle_tokens_per_second": idle["tokens_per_second"],
                "busy_tokens_per_second": busy["tokens_per_second"],
                "slowdown": round(idle["tokens_per_second"] / busy["tokens_per_second"], 2),
            }
        )
    report = {
        "model": args.model,
        "steps": args.steps,
        "busy_processes": args.busy,
        "cpu": cpu_name(),
        "cpu_capability": cpu_capability(),
        "cores": cores,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{args.model}, {args.steps} steps of the committed params.yaml, beside {args.busy} busy process(es); "
        f"{cpu_name()}, CPU capability {cpu_capability()}, {cores} cores\n"
    )
    print("| setting | threads idle / busy | idle tok/s | busy tok/s | slowdown (idle / busy) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['threads_idle']} / {r['threads_busy']} | {r['idle_tokens_per_second']:,.0f} | "
            f"{r['busy_tokens_per_second']:,.0f} | {r['slowdown']:.2f} |"
        )
    return report


if __name__ == "__main__":
    main()
