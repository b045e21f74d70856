"""`rnnlm`: use a trained model file outside the pipeline.

    rnnlm sample --model models/lstm.pt --prefix "time traveller"
    rnnlm score  --model models/lstm.pt data/heldout/val.txt
    rnnlm info   --model models/lstm.pt

A model file carries its vocabulary, tokenizer and cleaning (see rnnlm.checkpoint), so a file
copied alone works. Sampling is the sample stage's own function (:func:`rnnlm.sample.sample_one`):
with the same seed `rnnlm sample` prints the sample stage's text. `rnnlm score` reads a text as a
stream (:mod:`rnnlm.score`) and scores it as the evaluate stage does: a held-out split gets the
evaluate stage's perplexity.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch

from .checkpoint import load_packaged
from .device import resolve_device
from .errors import ParamError, RnnlmError, stage_main
from .metrics import bits_per_token, perplexity
from .models import num_parameters
from .params import DEVICES, STRATEGIES, validate_section
from .sample import sample_one
from .score import score_file

# The tool's own sampling defaults (outside a project there is no params.yaml to read them from);
# tests/test_cli.py keeps them equal to the committed params.yaml's `sample` section.
SAMPLE_DEFAULTS = {"length": 100, "strategy": "top_k", "temperature": 0.8, "top_k": 5, "seed": 0}


@contextlib.contextmanager
def _flags():
    """A ParamError from checking the command line's values names the flag, not params.yaml."""
    try:
        yield
    except ParamError as exc:
        flag = "--" + exc.key.split(".")[-1].lstrip("-").replace("_", "-")
        raise RnnlmError(f"{flag}: {exc.problem}") from None


def _load(args):
    with _flags():
        device = resolve_device(args.device, "device")
    model, vocab, ckpt = load_packaged(args.model, device)
    return model, vocab, ckpt, device


# --------------------------------------------------------------------------- sample
def cmd_sample(args) -> None:
    with _flags():
        cfg = validate_section(
            "sample",
            {
                "prefixes": [args.prefix],
                "length": args.length,
                "strategy": args.strategy,
                "temperature": args.temperature,
                "top_k": args.top_k,
                "seed": args.seed,
                "device": args.device,
            },
        )
    model, vocab, ckpt, device = _load(args)
    print(sample_one(model, vocab, ckpt.get("name", ""), args.prefix, cfg, device))


# --------------------------------------------------------------------------- score
def cmd_score(args) -> None:
    model, vocab, ckpt, device = _load(args)
    clean = (vocab.source or {}).get("clean", {})
    unit = "char" if vocab.level == "char" else "word"
    rows = [
        (
            "<stdin>" if name == "-" else name,
            *score_file(model, vocab, name, clean, args.no_clean, device, sys.stderr.isatty()),
        )
        for name in args.files
    ]
    if len(rows) > 1:
        rows.append(("total", *(sum(r[i] for r in rows) for i in (1, 2, 3))))
    for label, nll, n, unk in rows:
        print(
            f"{label}: perplexity {perplexity(nll, n):.6f}, {bits_per_token(nll, n):.6f} bits per {unit}, "
            f"{n} {unit}s scored ({unk} <unk>)"
        )


# --------------------------------------------------------------------------- info
def eval_scores(model_path: Path, name: str, val_ppl: float) -> dict | None:
    """The evaluate stage's scores of this model, when the model sits in a project that evaluated
    it (``<project>/models/<name>.pt`` beside ``<project>/metrics/eval.json`` with the same val
    perplexity); None otherwise."""
    path = model_path.resolve().parent.parent / "metrics" / "eval.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["models"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not math.isclose(entry.get("val", {}).get("perplexity", -1), val_ppl, rel_tol=1e-5):
        return None
    return {"path": path, **entry}


def model_card(path: Path, model, vocab, ckpt) -> list[str]:
    cfg = ckpt["model_config"]
    src = vocab.source or {}
    sha = src.get("sha256")
    sha = ", ".join(f"{k} {v[:12]}" for k, v in sha.items()) if isinstance(sha, dict) else (sha or "?")[:12]
    clean = src.get("clean", {})
    softmax = cfg.get("softmax", "full") + (", tied" if cfg.get("tie_weights") else "")
    lines = [
        f"model:       {ckpt.get('name', '?')} ({cfg['cell']}, impl {cfg['impl']}), "
        f"{num_parameters(model):,} parameters",
        f"sizes:       hidden {cfg['hidden']}, layers {cfg['layers']}, embedding {cfg['embedding']}, "
        f"dropout {cfg['dropout']}, softmax {softmax}",
        f"vocabulary:  {len(vocab):,} {vocab.level} types"
        + (f", tokenizer {vocab.tokenizer}" if vocab.level == "word" else "")
        + (", <eos> at line ends" if vocab.eos else ""),
        f"corpus:      {src.get('corpus', '?')} (sha256 {sha}), clean mode {clean.get('mode', '?')}",
        f"trained:     {ckpt.get('step')} steps; val perplexity {ckpt.get('val_perplexity'):.6f} "
        "(best validation point)",
    ]
    scores = eval_scores(path, ckpt.get("name", ""), ckpt.get("val_perplexity", math.nan))
    if scores is not None:
        lines.append(
            f"evaluated:   test perplexity {scores['test']['perplexity']:.6f}, "
            f"{scores['test']['bits_per_token']:.6f} bits per token ({scores['path']})"
        )
    return lines


def cmd_info(args) -> None:
    model, vocab, ckpt, _ = _load(args)
    print("\n".join(model_card(Path(args.model), model, vocab, ckpt)))


# --------------------------------------------------------------------------- parser
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rnnlm", description="Use a trained rnnlm model file.")
    sub = top.add_subparsers(dest="command", required=True, metavar="{sample,score,info}")

    def command(name: str, help: str, fn) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--model", required=True, help="a model file, e.g. models/lstm.pt")
        p.add_argument("--device", default="cpu", choices=DEVICES, help="default: cpu")
        p.set_defaults(fn=fn)
        return p

    d = SAMPLE_DEFAULTS
    p = command("sample", "print generated text after a prefix", cmd_sample)
    p.add_argument("--prefix", default="", help="text to continue (default: none; the first token is sampled)")
    p.add_argument("--length", type=int, default=d["length"], help=f"tokens to generate (default {d['length']})")
    p.add_argument("--strategy", default=d["strategy"], choices=STRATEGIES, help=f"default {d['strategy']}")
    p.add_argument(
        "--temperature", type=float, default=d["temperature"], help=f"default {d['temperature']}; 0 = greedy"
    )
    p.add_argument("--top-k", type=int, default=d["top_k"], help=f"default {d['top_k']}")
    p.add_argument(
        "--seed",
        type=int,
        default=d["seed"],
        help=f"default {d['seed']}; the same seed gives the sample stage's text for this model and prefix",
    )

    p = command("score", "perplexity and bits per token of texts under the model", cmd_score)
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files; - reads stdin")
    p.add_argument(
        "--no-clean",
        action="store_true",
        help="tokenize the text as written (default: clean it the way the model's corpus was)",
    )

    command("info", "the model card: cell, sizes, parameters, corpus, vocabulary, perplexity", cmd_info)
    return top


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with torch.no_grad():
        args.fn(args)


if __name__ == "__main__":
    main()
