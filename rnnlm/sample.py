"""Text generation from a trained model: the sample stage's work.

How a sample is made (:func:`generate`):

* The prefix is tokenized at the vocabulary's level. Tokens outside the vocabulary become
  ``<unk>`` (id 0), with one warning naming them; the output still shows the prefix as given.
* The prefix runs through the model once, from a zero state; afterwards one token at a time
  is fed back with the hidden state carried (never re-running the whole sequence).
* An empty prefix (or one with no tokens, e.g. only spaces at word level) starts from a zero
  state too. If the vocabulary reserves ``<bos>`` and the training data contains it, the model is
  primed on ``<bos>`` (which is not shown). Otherwise the first token is chosen from the train
  split's unigram distribution (the vocabulary's counts), which is the best context-free
  estimate of P(first token), with the same strategy as every other token (greedy: the most
  frequent token). That first token counts toward ``length`` and is part of the output.
* ``<unk>`` and the reserved tokens are never generated (their logits are masked), unless the
  vocabulary holds nothing else.
* Strategies: ``greedy`` (argmax; temperature ignored), ``temperature`` (sample from
  softmax(logits / temperature)), ``top_k`` (keep the top_k largest logits, then temperature).
  Temperature 0 is greedy with any strategy (the limit of T -> 0).
  Choices are made on the CPU in float64 with the given ``torch.Generator``, so a seed fixes the
  text. The stage seeds one generator per (seed, model, prefix) (:func:`sample_seed`), so a
  sample does not depend on which other models or prefixes are sampled, or in which order.
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


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def default_prefixes(corpus: str) -> list[str]:
    """The prefixes used when ``sample.prefixes`` is empty: per catalog corpus, else one empty prefix."""
    return list(DEFAULT_PREFIXES.get(corpus, [""]) if isinstance(corpus, str) else [""])


def sample_seed(seed: int, model: str, prefix: str) -> int:
    """A 63-bit seed for one (seed, model, prefix), stable across runs, platforms and orderings."""
    digest = hashlib.sha256(f"{seed}\x00{model}\x00{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def banned_ids(vocab: Vocab) -> list[int]:
    """Ids never generated: ``<unk>`` and the reserved tokens (none if nothing else would remain)."""
    banned = sorted({vocab.unk} | {vocab.index[t] for t in vocab.reserved if t in vocab.index})
    return banned if len(banned) < len(vocab) else []


def encode_prefix(vocab: Vocab, prefix: str, warn: Callable[[str], None] | None = _stderr) -> list[int]:
    """Token ids of ``prefix``; unknown tokens map to ``<unk>`` with one warning naming them."""
    tokens = vocab.tokenize(prefix, eos=False)
    unknown = [t for t in dict.fromkeys(vocab.unknown(tokens)) if t != UNK]
    if unknown and warn is not None:
        shown = ", ".join(repr(t) for t in unknown)
        warn(f"warning: prefix {prefix!r}: {len(unknown)} token(s) not in the vocabulary, mapped to {UNK}: {shown}")
    return vocab.encode(tokens).tolist()


def choose(
    logits: torch.Tensor,
    strategy: str,
    temperature: float = 1.0,
    top_k: int = 5,
    generator: torch.Generator | None = None,
    banned: Sequence[int] = (),
) -> int:
    """Pick the next id from a (V,) vector of logits with ``strategy``; ``banned`` ids are masked."""
    logits = logits.detach().cpu().to(torch.float64, copy=True)  # on the CPU: Apple mps has no float64
    if len(banned):
        logits[list(banned)] = -math.inf
    if strategy == "greedy" or temperature == 0:
        return int(torch.argmax(logits))
    candidates = torch.arange(len(logits))
    if strategy == "top_k":
        allowed = int(torch.isfinite(logits).sum())
        logits, candidates = torch.topk(logits, max(1, min(int(top_k), allowed)))
    # Scale the gaps to the best logit, not the logits: (l - max) / T is <= 0 for any T > 0, so a
    # tiny temperature (1e-320) gives a one-hot distribution instead of inf - inf = nan.
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
    warn: Callable[[str], None] | None = _stderr,
) -> str:
    """``prefix`` followed by ``length`` generated tokens, detokenized (see the module doc).

    ``warn`` receives the one out-of-vocabulary warning (None: silent).
    """
    ids = encode_prefix(vocab, prefix, warn)
    if length <= 0:
        return prefix
    banned = banned_ids(vocab)
    pick = lambda lg: choose(lg, strategy, temperature, top_k, generator, banned)  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        out: list[int] = []
        if ids:
            primer = ids
        elif BOS in vocab.index and vocab.counts[vocab.index[BOS]] > 0:
            primer = [vocab.index[BOS]]
        else:  # empty prefix: the first token from the unigram distribution of the train split
            prior = torch.log(torch.tensor(vocab.counts, dtype=torch.float64))  # log 0 = -inf: never chosen
            if not torch.isfinite(prior[[i for i in range(len(vocab)) if i not in banned]]).any():
                prior = torch.zeros(len(vocab), dtype=torch.float64)  # no counts at all: uniform
            out.append(pick(prior))
            primer = out[:]
        logits, state = model(torch.tensor([primer], dtype=torch.long, device=device))
        last = logits[0, -1]
        while len(out) < length:
            out.append(pick(last))
            if len(out) < length:
                logits, state = model(torch.tensor([[out[-1]]], dtype=torch.long, device=device), state)
                last = logits[0, -1]
    finally:
        model.train(was_training)
    text = vocab.to_text(out)
    if not ids:
        return text
    sep = " " if vocab.level == "word" and prefix and not prefix[-1].isspace() else ""
    return prefix + sep + text


def sample_one(
    model,
    vocab: Vocab,
    name: str,
    prefix: str,
    cfg: SampleConfig,
    device="cpu",
    warn: Callable[[str], None] | None = _stderr,
) -> str:
    """One sample as the sample stage makes it (``cfg``: the ``sample`` params section), seeded by
    (cfg seed, model name, prefix): `rnnlm sample` with the same seed prints the same text."""
    gen = torch.Generator().manual_seed(sample_seed(cfg.seed, name, prefix))
    return generate(model, vocab, prefix, cfg.length, cfg.strategy, cfg.temperature, cfg.top_k, gen, device, warn=warn)


# --- the stage ------------------------------------------------------------------------------
def describe(cfg: SampleConfig) -> str:
    if cfg.strategy == "greedy" or cfg.temperature == 0:
        how = "greedy"
    elif cfg.strategy == "temperature":
        how = f"temperature {cfg.temperature:g}"
    else:
        how = f"top_k {cfg.top_k}, temperature {cfg.temperature:g}"
    return f"strategy {how}; seed {cfg.seed}; {cfg.length} tokens after each prefix"


def show_prefix(prefix: str) -> str:
    """A prefix as a quoted string for headers (JSON quoting, so non-ASCII stays readable)."""
    return json.dumps(prefix, ensure_ascii=False) + (" (empty)" if not prefix else "")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def samples_markdown(samples: dict[str, list[tuple[str, str]]], cfg: SampleConfig) -> str:
    lines = ["# Samples", "", f"{describe(cfg)}; from checkpoints models/<model>.pt.", ""]
    for model, rows in samples.items():
        lines += [f"## {model}", ""]
        for prefix, text in rows:
            fence = _fence(text)
            lines += [f"### prefix {show_prefix(prefix)}", "", f"{fence}text", text, fence, ""]
    return "\n".join(lines)


def samples_text(model: str, rows: list[tuple[str, str]], cfg: SampleConfig) -> str:
    lines = [f"# {model}: {describe(cfg)}", ""]
    for i, (prefix, text) in enumerate(rows, 1):
        lines += [f"--- prefix {i}/{len(rows)}: {show_prefix(prefix)}", text, ""]
    return "\n".join(lines)


def run_sample(
    cfg: SampleConfig,
    corpus: str,
    root: str | Path = ".",
    models: Sequence[str] = MODELS,
    warn: Callable[[str], None] = _stderr,
) -> dict[str, list[tuple[str, str]]]:
    """Sample every model for every prefix; write samples/<model>.txt and samples/samples.md.

    Returns {model: [(prefix, text), ...]}.
    """
    root = Path(root)
    device = resolve_device(cfg.device, "sample.device")
    vocab = Vocab.load(root / "data" / "vocab.json")
    prefixes = list(dict.fromkeys(cfg.prefixes)) or default_prefixes(corpus)
    ckpts = model_files(root, models)
    for p in prefixes:  # warn once per prefix, not once per model
        encode_prefix(vocab, p, warn)
    samples: dict[str, list[tuple[str, str]]] = {}
    for m in models:
        model, _ = load_model(ckpts[m], vocab.fingerprint, device, own=True)
        samples[m] = [(p, sample_one(model, vocab, m, p, cfg, device, warn=None)) for p in prefixes]
    out = root / "samples"
    for m, rows in samples.items():
        write_text(out / f"{m}.txt", samples_text(m, rows, cfg))
    write_text(out / "samples.md", samples_markdown(samples, cfg))
    return samples
