"""Training throughput of one process against several (``train.nproc``, torchrun + DDP).

Runs the real train stage (``python -m stages.train lstm``) on the project's data/tokens with the
committed params.yaml, a step budget (``--steps``) and the same global minibatch in every row:

* 1 process with all the cores as torch threads (today's default),
* 1 process with 1 thread,
* ``--nproc`` processes with cores / nproc threads each,

and reports the training tokens/s each run wrote to metrics/timing/lstm.json (validation
excluded) and the wall time (process start-up and torchrun's rendezvous included), as ratios
against the first row. On a 2-core CPU no speed-up is expected: the point of several processes is
several GPUs or machines; here the rows show what the gradient all-reduce costs. Each run works in
a temporary copy of params.yaml and data/, never in the workspace.

Usage: ``make bench`` or ``.venv/bin/python bench/processes.py [--steps 200] [--nproc 2] [--model lstm]``
(needs data/vocab.json and data/tokens: ``dvc repro vocab``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rnnlm import distributed
from rnnlm.device import cpu_capability

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(model: str, steps: int, nproc: int, threads: int, env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "data", work / "data", ignore=shutil.ignore_patterns("raw", "clean"))
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["train"].update(max_steps=steps, nproc=nproc, threads=threads, device="cpu", eval_every=0)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            **({"OMP_NUM_THREADS": str(threads)} if threads else {}),
            **(env or {}),
        }  # threads 0: the stage's own choice
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "stages.train", model], cwd=work, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"error: {nproc} process(es) x {threads} thread(s) failed:\n{proc.stderr.strip()}")
        timing = json.loads((work / "metrics" / "timing" / f"{model}.json").read_text())
    return {
        "processes": nproc,
        "threads": timing["threads"],
        "tokens_per_second": timing["tokens_per_second"],
        "wall_seconds": round(wall, 1),
        "tokens": timing["tokens"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the multi-process row")
    parser.add_argument("--model", default="lstm", choices=("rnn", "lstm", "gru"))
    args = parser.parse_args(argv)
    if not (ROOT / "data" / "tokens").is_dir():
        sys.exit("error: data/tokens is missing; run `dvc repro vocab` first")
    cores = distributed.cores()
    rows = [
        run(args.model, args.steps, 1, cores),
        run(args.model, args.steps, 1, 1),
        run(args.model, args.steps, args.nproc, max(1, cores // args.nproc)),
    ]
    base = rows[0]
    print(
        f"\n{args.model}, {args.steps} steps of the committed params.yaml's global minibatch, "
        f"{cpu_name()}, CPU capability {cpu_capability()}, {cores} cores, torch CPU build\n"
    )
    print("| processes x threads | train tok/s | vs 1 x all cores | wall s (start-up included) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['processes']} x {row['threads']} | {row['tokens_per_second']:,.0f} | "
            f"{row['tokens_per_second'] / base['tokens_per_second']:.2f} | {row['wall_seconds']:.1f} |"
        )
    assert len({row["tokens"] for row in rows}) == 1, "every row must train on the same tokens"


if __name__ == "__main__":
    main()
