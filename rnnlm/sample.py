"""Text generation from a trained model: the sample stage's work, and `rnnlm sample`'s.

The prefix runs through the model once, then each new token is fed back with the state carried.
An empty prefix primes the model on ``<bos>`` when the training data has it; else its first token
comes from the train split's unigram counts (the best context-free guess). Each sample has its own
generator, seeded by (seed, model, prefix): it does not depend on what else is sampled, or in which order.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import paths
from .checkpoint import load_model, model_files
from .device import resolve_device
from .fileio import write_text
from .params import MODELS, SampleConfig
from .vocab import UNK, Vocab

BOS = "<bos>"
DEFAULT_PREFIXES = {
    "timemachine": ["time traveller"],
    "jaychou": ["分开", "不分开"],
    "tinyshakespeare": ["ROMEO:"],
    "ptb": ["the company said", "in the first quarter"],
}
Warn = Callable[[str], None] | None  # where the out-of-vocabulary warning goes (None: nowhere)
Samples = dict[str, list[tuple[str, str]]]  # {model: [(prefix, text), ...]}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def default_prefixes(corpus) -> list[str]:
    """The prefixes when ``sample.prefixes`` is empty: per catalog corpus, else one empty prefix."""
    return list(DEFAULT_PREFIXES.get(corpus, [""])) if isinstance(corpus, str) else [""]


def sample_seed(seed: int, model: str, prefix: str) -> int:
    """A 63-bit seed for one (seed, model, prefix), stable across runs, platforms and orderings."""
    digest = hashlib.sha256(f"{seed}\x00{model}\x00{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def banned_ids(vocab: Vocab) -> list[int]:
    """Ids never generated: ``<unk>`` and the reserved tokens (none if nothing else would remain)."""
    banned = sorted({vocab.unk} | {vocab.index[t] for t in vocab.reserved if t in vocab.index})
    return banned if len(banned) < len(vocab) else []


def encode_prefix(vocab: Vocab, prefix: str, warn: Warn = _stderr) -> list[int]:
    """Token ids of ``prefix``; unknown tokens map to ``<unk>`` with one warning naming them."""
    tokens = vocab.tokenize(prefix, eos=False)
    unknown = [t for t in dict.fromkeys(vocab.unknown(tokens)) if t != UNK]
    if unknown and warn is not None:
        shown = ", ".join(repr(t) for t in unknown)
        warn(f"warning: prefix {prefix!r}: {len(unknown)} token(s) not in the vocabulary, mapped to {UNK}: {shown}")
    return vocab.encode(tokens).tolist()


def choose(logits: torch.Tensor, strategy: str, temperature=1.0, top_k=5, generator=None, banned: Sequence[int] = ()):
    """The next id from (V,) logits, ``banned`` ids masked: ``greedy`` takes the argmax, ``temperature``
    samples softmax(logits / temperature), ``top_k`` the same among the top_k. Temperature 0 is greedy."""
    logits = logits.detach().cpu().to(torch.float64, copy=True)  # on the CPU: Apple mps has no float64
    if len(banned):
        logits[list(banned)] = -math.inf
    if strategy == "greedy" or temperature == 0:
        return int(torch.argmax(logits))
    candidates = torch.arange(len(logits))
    if strategy == "top_k":
        allowed = int(torch.isfinite(logits).sum())
        logits, candidates = torch.topk(logits, max(1, min(int(top_k), allowed)))
    # (logits - max) / T is <= 0 for any T > 0: a tiny T (1e-320) gives one-hot, not inf - inf = nan
    probs = torch.softmax((logits - logits.max()) / temperature, dim=-1)
    return int(candidates[torch.multinomial(probs, 1, generator=generator)])


@torch.no_grad()
def generate(
    model,
    vocab: Vocab,
    prefix: str,
    length: int,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int = 5,
    generator: torch.Generator | None = None,
    device="cpu",
    warn: Warn = _stderr,
) -> str:
    """``prefix`` followed by ``length`` generated tokens, as text."""
    ids = encode_prefix(vocab, prefix, warn)
    if length <= 0:
        return prefix
    banned = banned_ids(vocab)
    out: list[int] = []
    if ids:
        inputs = ids
    elif BOS in vocab.index and vocab.counts[vocab.index[BOS]] > 0:
        inputs = [vocab.index[BOS]]
    else:
        prior = torch.log(torch.tensor(vocab.counts, dtype=torch.float64))  # log 0 = -inf: never chosen
        if not torch.isfinite(prior[[i for i in range(len(vocab)) if i not in banned]]).any():
            prior = torch.zeros(len(vocab), dtype=torch.float64)  # no counts at all: uniform
        out.append(choose(prior, strategy, temperature, top_k, generator, banned))
        inputs = out[:]
    was_training = model.training
    model.eval()
    try:
        state = None
        while len(out) < length:
            logits, state = model(torch.tensor([inputs], dtype=torch.long, device=device), state)
            out.append(choose(logits[0, -1], strategy, temperature, top_k, generator, banned))
            inputs = out[-1:]
    finally:
        model.train(was_training)
    if not ids:
        return vocab.to_text(out)
    sep = " " if vocab.level == "word" and not prefix[-1].isspace() else ""
    return prefix + sep + vocab.to_text(out)


def sample_one(model, vocab: Vocab, name: str, prefix: str, cfg: SampleConfig, device="cpu", warn: Warn = _stderr):
    """One sample as the sample stage makes it (``cfg``: the ``sample`` params), seeded by its model and prefix."""
    gen = torch.Generator().manual_seed(sample_seed(cfg.seed, name, prefix))
    return generate(model, vocab, prefix, cfg.length, cfg.strategy, cfg.temperature, cfg.top_k, gen, device, warn=warn)


def run_sample(cfg: SampleConfig, corpus, root: str | Path = ".", models=MODELS, warn: Warn = _stderr) -> Samples:
    """Sample every model after every prefix; write samples/<model>.txt and samples/samples.md."""
    root = Path(root)
    device = resolve_device(cfg.device, "sample.device")
    vocab = Vocab.load(root / paths.VOCAB)
    prefixes = list(dict.fromkeys(cfg.prefixes)) or default_prefixes(corpus)
    ckpts = model_files(root, models)
    for p in prefixes:  # warn once per prefix, not once per model
        encode_prefix(vocab, p, warn)
    samples: Samples = {}
    for m in models:
        model, _ = load_model(ckpts[m], vocab.fingerprint, device, own=True)
        samples[m] = [(p, sample_one(model, vocab, m, p, cfg, device, warn=None)) for p in prefixes]
    write_samples(root / paths.SAMPLES, samples, cfg)
    return samples


def write_samples(out: Path, samples: Samples, cfg: SampleConfig) -> None:
    if cfg.strategy == "greedy" or cfg.temperature == 0:
        how = "greedy"
    elif cfg.strategy == "temperature":
        how = f"temperature {cfg.temperature:g}"
    else:
        how = f"top_k {cfg.top_k}, temperature {cfg.temperature:g}"
    about = f"strategy {how}; seed {cfg.seed}; {cfg.length} tokens after each prefix"
    md = ["# Samples", "", f"{about}; from checkpoints models/<model>.pt.", ""]
    for model, rows in samples.items():
        txt = [f"# {model}: {about}", ""]
        md += [f"## {model}", ""]
        for i, (prefix, text) in enumerate(rows, 1):
            shown = json.dumps(prefix, ensure_ascii=False) + ("" if prefix else " (empty)")  # non-ASCII readable
            fence = "`" * max(3, 1 + max(map(len, re.findall(r"`+", text)), default=0))  # longer than any in text
            txt += [f"--- prefix {i}/{len(rows)}: {shown}", text, ""]
            md += [f"### prefix {shown}", "", f"{fence}text", text, fence, ""]
        write_text(out / f"{model}.txt", "\n".join(txt))
    write_text(out / "samples.md", "\n".join(md))
