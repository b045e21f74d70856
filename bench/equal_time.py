"""LSTM against Transformer at equal training wall time on Tiny Shakespeare.

Each family trains as the tinyshakespeare recipe configures it (params.yaml + recipes/
tinyshakespeare.yaml: sizes, batch, num_steps, optimizer, lr, clipping), but with a budget in
seconds instead of steps: one run per time point, its lr on the recipe's schedule over that run's
own time (cosine to a tenth), so every point is a finished run, not a snapshot of a longer one.
Evaluation is not timed. The held-out text is the last 10% of the characters (the recipe's val +
test, and nanoGPT's val split), scored with every token given its full preceding context (one
stream; the Transformer's sliding window, rnnlm/transformer.py).

Usage (``make setup`` first; it prints a table and writes JSON):

    .venv/bin/python bench/equal_time.py [--points 60 300 900] [--models lstm transformer] [--out bench.json]

The report names the CPU class (``torch.backends.cpu.get_cpu_capability()``) and thread count;
to measure the AVX2 class on a newer CPU, export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 first (docs/results.md, "Checking the AVX2 cap").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnlm.batching import batches  # noqa: E402
from rnnlm.device import cpu_capability  # noqa: E402
from rnnlm.metrics import model_nll  # noqa: E402
from rnnlm.models import detach_state, num_parameters  # noqa: E402
from rnnlm.params import load_model_config  # noqa: E402
from rnnlm.recipes import load_recipe  # noqa: E402
from rnnlm.train import build_model, check_inputs, make_optimizer, train_step  # noqa: E402
from rnnlm.vocab import Vocab  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def recipe_configs(models: list[str], recipe: str = "tinyshakespeare") -> dict:
    """{model: (model config, train config)} of params.yaml with the recipe on top."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, values in load_recipe(recipe, ROOT / "recipes").items():
        params[section] = {**params.get(section, {}), **values} if isinstance(values, dict) else values
    params["models"] = list(models)
    return {m: load_model_config(m, params=params) for m in models}


def splits(path: Path) -> tuple[Vocab, np.ndarray, np.ndarray]:
    """Characters of the text: (vocabulary of the first 90%, the first 90%, the last 10%)."""
    text = path.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    vocab = Vocab.build(list(text[:cut]), "char")
    return vocab, vocab.encode(list(text[:cut])), vocab.encode(list(text[cut:]))


def train_for(name: str, model_cfg, cfg, vocab, train: np.ndarray, seconds: float, seed: int = 0):
    """Train model ``name`` for ``seconds`` of wall time (lr on a cosine to a tenth over that time)."""
    check_inputs(cfg, train, train)  # a minibatch fits (else no step would ever run)
    torch.manual_seed(seed)
    model = build_model(model_cfg, name, len(vocab))
    optimizer = make_optimizer(model.parameters(), cfg)
    rng, steps, tokens, start, state = np.random.default_rng(seed), 0, 0, time.perf_counter(), None
    while True:
        for X, Y in batches(train, cfg.batch_size, cfg.num_steps, cfg.sampling, rng):
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return model, steps, tokens, elapsed
            for group in optimizer.param_groups:  # cosine from lr to lr / 10 over the time budget
                group["lr"] = cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * elapsed / seconds)))
            if cfg.sampling == "random" or state is None:
                state = model.begin_state(X.shape[0])
            _, state = train_step(model, optimizer, X, Y, state, cfg.clip_theta)
            state = detach_state(state)
            steps, tokens = steps + 1, tokens + X.numel()
        state = None


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=float, nargs="+", default=[60, 300, 900], help="training seconds")
    ap.add_argument("--models", nargs="+", default=["lstm", "transformer"], help="params sections")
    ap.add_argument("--data", type=Path, default=CORPUS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab, train, heldout = splits(args.data)
    rows = []
    for seconds in args.points:
        for name, (model_cfg, cfg) in recipe_configs(args.models).items():
            model, steps, tokens, took = train_for(name, model_cfg, cfg, vocab, train, seconds)
            nll, n = model_nll(model, heldout, 1, 256)
            rows.append(
                dict(seconds=seconds, model=name, params=num_parameters(model), steps=steps, tokens_per_s=tokens / took)
                | dict(heldout_nats=nll / n, heldout_ppl=math.exp(nll / n))
            )
            print(json.dumps(rows[-1]), flush=True)
    cpu = f"{cpu_capability()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    table = pd.DataFrame(rows).pivot(index="seconds", columns="model", values="heldout_nats")
    table["best"] = table.idxmin(axis=1)
    print(f"\nHeld-out nats/char (last 10% of Tiny Shakespeare) by training seconds; CPU class {cpu}\n")
    print(table.to_markdown(floatfmt=".3f"))
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
