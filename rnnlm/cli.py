"""`rnnlm`: use a trained model file outside the pipeline.

    rnnlm sample --model models/lstm.pt --prefix "time traveller"
    rnnlm score  --model models/lstm.pt data/heldout/val.txt
    rnnlm info   --model models/lstm.pt

A model file carries its vocabulary, tokenizer and cleaning, so a file copied alone works. With the
same seed `rnnlm sample` prints the sample stage's text; `rnnlm score` gives the evaluate stage's numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch

from . import cache, dynamic, paths
from .checkpoint import load_packaged
from .device import resolve_device
from .errors import ParamError, RnnlmError, stage_main
from .metrics import bits_per_token, perplexity
from .models import num_parameters
from .params import DEVICES, STRATEGIES, validate_section
from .sample import sample_one
from .score import score_file
from .vocab import load_tokens

# Outside a project there is no params.yaml: tests/test_cli.py keeps these equal to its `sample` section.
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
    return (*load_packaged(args.model, device), device)  # model, vocab, checkpoint, device


def cmd_sample(args) -> None:
    flags = {k: getattr(args, k) for k in ("length", "strategy", "temperature", "top_k", "seed", "device")}
    with _flags():
        cfg = validate_section("sample", {"prefixes": [args.prefix], **flags})
    model, vocab, ckpt, device = _load(args)
    print(sample_one(model, vocab, ckpt.get("name", ""), args.prefix, cfg, device))


def project_eval(model_path: str, ckpt: dict) -> dict | None:
    """The evaluate stage's metrics/eval.json when the model file sits in its project's models/
    and is the file that stage scored (the same val perplexity); None otherwise."""
    path = Path(model_path).resolve().parent.parent / "metrics" / "eval.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        val = float(data["models"][ckpt.get("name", "")]["val"]["perplexity"])
    except (OSError, ValueError, KeyError, TypeError):  # no file, not JSON, not this model, null (overflowed)
        return None
    return data if math.isclose(val, ckpt["val_perplexity"], rel_tol=1e-5) else None


def adaptive_scorer(args, model, vocab, ckpt, device):
    """``--cache`` / ``--dynamic``: a function ids -> log-probs of ids[1:] with the settings the
    evaluate stage fitted on val for this model (and, for dynamic evaluation, the project's
    training text for its step sizes); None without either flag."""
    kind = "cache" if args.cache else "dynamic" if args.dynamic else None
    if kind is None:
        return None
    name, data = ckpt.get("name", ""), project_eval(args.model, ckpt)
    fitted = (data or {}).get(kind, {}).get(f"{name}+{kind}")
    if fitted is None:
        raise RnnlmError(
            f"--{kind}: no {kind} settings fitted for {args.model}: they come from the evaluate stage "
            f"(evaluate.{kind}: true, or a list with {name or 'the model'}), read from metrics/eval.json of the "
            "project the model file is in (found when its val perplexity there is this file's)"
        )
    if kind == "cache":

        def cached(ids):
            model_lp, cache_lp = cache.log_probs(model, ids, [(fitted["window"], fitted["theta"])], device)
            return cache.mix(model_lp, cache_lp[0], fitted["weight"])

        return cached
    eta, decay = fitted["eta"], fitted["decay"]
    if eta == 0 and decay == 0:  # the fit found no step that helps: the model as trained, no gradients
        return lambda ids: dynamic.log_probs(model, ids, None, eta, decay, device)
    ms = dynamic.mean_squared_grads(
        model, load_tokens(Path(args.model).resolve().parent.parent / paths.TOKENS / "train.npy"), device
    )
    return lambda ids: dynamic.log_probs(model, ids, ms, eta, decay, device)


def cmd_score(args) -> None:
    model, vocab, ckpt, device = _load(args)
    clean = (vocab.source or {}).get("clean", {})
    scorer = adaptive_scorer(args, model, vocab, ckpt, device)
    rows = []
    for name in args.files:
        nll, n, unk = score_file(model, vocab, name, clean, args.no_clean, device, sys.stderr.isatty(), scorer)
        rows.append(("<stdin>" if name == "-" else name, nll, n, unk))
    if len(rows) > 1:
        rows.append(("total", *(sum(r[i] for r in rows) for i in (1, 2, 3))))
    unit = "char" if vocab.level == "char" else "word"
    for label, nll, n, unk in rows:
        print(
            f"{label}: perplexity {perplexity(nll, n):.6f}, {bits_per_token(nll, n):.6f} bits per {unit}, "
            f"{n} {unit}s scored ({unk} <unk>)"
        )


def cmd_info(args) -> None:
    model, vocab, ckpt, _ = _load(args)
    cfg, src, val = ckpt["model_config"], vocab.source or {}, ckpt["val_perplexity"]
    sha = src.get("sha256")
    sha = ", ".join(f"{k} {v[:12]}" for k, v in sha.items()) if isinstance(sha, dict) else (sha or "?")[:12]
    softmax = cfg.get("softmax", "full") + (", tied" if cfg.get("tie_weights") else "")
    if cfg["cell"] == "transformer":
        sizes = f"d_model {cfg['d_model']}, layers {cfg['layers']}, heads {cfg['heads']}, context {cfg['context']}"
    else:
        sizes = f"hidden {cfg['hidden']}, layers {cfg['layers']}, embedding {cfg['embedding']}"
    lines = [
        f"model:       {ckpt.get('name', '?')} ({cfg['cell']}, impl {model.impl}), "
        f"{num_parameters(model):,} parameters",
        f"sizes:       {sizes}, dropout {cfg['dropout']}, softmax {softmax}",
        f"vocabulary:  {len(vocab):,} {vocab.level} types"
        + (f", tokenizer {vocab.tokenizer}" if vocab.level == "word" else "")
        + (", <eos> at line ends" if vocab.eos else ""),
        f"corpus:      {src.get('corpus', '?')} (sha256 {sha}), clean mode {src.get('clean', {}).get('mode', '?')}",
        f"trained:     {ckpt.get('step')} steps; val perplexity {val:.6f} (best validation point)",
    ]
    data = project_eval(args.model, ckpt)  # the evaluate stage's scores of this very file, if any
    if data is not None:
        scores = data["models"][ckpt["name"]]["test"]
        lines.append(
            f"evaluated:   test perplexity {scores['perplexity']:.6f}, {scores['bits_per_token']:.6f} bits per "
            f"token ({Path(args.model).resolve().parent.parent / 'metrics' / 'eval.json'})"
        )
    print("\n".join(lines))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rnnlm", description="Use a trained rnnlm model file.")
    sub = top.add_subparsers(dest="command", required=True, metavar="{sample,score,info}")

    def command(name: str, help: str, fn) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--model", required=True, help="a model file, e.g. models/lstm.pt")
        p.add_argument("--device", default="cpu", choices=DEVICES, help="default: cpu")
        p.set_defaults(fn=fn)
        return p

    d = SAMPLE_DEFAULTS  # help texts show them with %(default)s
    p = command("sample", "print generated text after a prefix", cmd_sample)
    p.add_argument("--prefix", default="", help="text to continue (default: none; the first token is sampled)")
    p.add_argument("--length", type=int, default=d["length"], help="tokens to generate (default %(default)s)")
    p.add_argument("--strategy", default=d["strategy"], choices=STRATEGIES, help="default %(default)s")
    p.add_argument("--temperature", type=float, default=d["temperature"], help="default %(default)s; 0 = greedy")
    p.add_argument("--top-k", type=int, default=d["top_k"], help="default %(default)s")
    seed = "default %(default)s; the same seed gives the sample stage's text for this model and prefix"
    p.add_argument("--seed", type=int, default=d["seed"], help=seed)

    p = command("score", "perplexity and bits per token of texts under the model", cmd_score)
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files; - reads stdin")
    clean = "tokenize the text as written (default: clean it the way the model's corpus was)"
    p.add_argument("--no-clean", action="store_true", help=clean)
    adapt = p.add_mutually_exclusive_group()
    fitted = "with the settings the evaluate stage fitted on val (metrics/eval.json of the model's project)"
    adapt.add_argument("--cache", action="store_true", help=f"mix in a neural cache {fitted}")
    adapt.add_argument("--dynamic", action="store_true", help=f"dynamic evaluation {fitted}")

    command("info", "the model card: cell, sizes, parameters, corpus, vocabulary, perplexity", cmd_info)
    return top


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with torch.no_grad():
        args.fn(args)


if __name__ == "__main__":
    main()
