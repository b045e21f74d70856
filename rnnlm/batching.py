"""Minibatches of (X, Y) windows over a token sequence, as "Dive into Deep Learning" defines them.

* random sampling: each epoch starts at a random offset in [0, num_steps); the sequence is
  cut into num_steps-long subsequences whose order is shuffled. Adjacent minibatches are
  not adjacent in the text, so the hidden state is re-initialised for every minibatch.
* sequential partitioning: a random offset in [0, num_steps], the text is split into
  batch_size parallel streams, and minibatch i+1 continues minibatch i in every row, so
  the hidden state is carried across minibatches (and detached from the graph).

Randomness comes only from the ``rng`` passed in (a numpy Generator), so a seed fixes
the batches. ``tokens`` is a numpy array or an int32 tensor (the model reads ids as int64
itself); the minibatches are made on the
tensor's device (the Trainer puts the split there once), with no per-step copy from the host.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .errors import ParamError


def check_batchable(n_tokens: int, batch_size: int, num_steps: int, sampling: str, split: str = "train") -> None:
    """Raise a ParamError unless at least one minibatch can be formed for any offset."""
    if num_steps >= n_tokens:
        raise ParamError(
            "train.num_steps",
            f"num_steps={num_steps} is not shorter than the {split} split ({n_tokens} tokens)",
        )
    if sampling == "random":
        ok = (n_tokens - num_steps) // num_steps >= batch_size
    else:
        ok = (n_tokens - num_steps - 1) // batch_size >= num_steps
    if not ok:
        raise ParamError(
            "train.batch_size",
            f"no minibatch of batch_size={batch_size} x num_steps={num_steps} fits in the {split} split "
            f"({n_tokens} tokens); lower batch_size or num_steps",
        )


def as_tensor(tokens) -> torch.Tensor:
    return tokens if torch.is_tensor(tokens) else torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int32))


def random_batches(
    tokens, batch_size: int, num_steps: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    data = as_tensor(tokens)[int(rng.integers(0, num_steps)) :]
    num_subseqs = (len(data) - 1) // num_steps
    starts = np.arange(0, num_subseqs * num_steps, num_steps)
    rng.shuffle(starts)
    num_batches = num_subseqs // batch_size
    starts = torch.from_numpy(starts).to(data.device)  # one copy per epoch
    offsets = torch.arange(num_steps, device=data.device)
    for i in range(0, batch_size * num_batches, batch_size):
        idx = starts[i : i + batch_size, None] + offsets
        yield data[idx], data[idx + 1]


def sequential_batches(
    tokens, batch_size: int, num_steps: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    offset = int(rng.integers(0, num_steps + 1))
    num_tokens = ((len(tokens) - offset - 1) // batch_size) * batch_size
    data = as_tensor(tokens)
    xs = data[offset : offset + num_tokens].reshape(batch_size, -1)
    ys = data[offset + 1 : offset + 1 + num_tokens].reshape(batch_size, -1)
    num_batches = xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        yield xs[:, i : i + num_steps], ys[:, i : i + num_steps]


def batches(tokens, batch_size, num_steps, sampling, rng):
    fn = random_batches if sampling == "random" else sequential_batches
    return fn(tokens, batch_size, num_steps, rng)


def num_batches(n_tokens: int, batch_size: int, num_steps: int, sampling: str) -> int:
    """Upper bound on minibatches per epoch (the exact count depends on the random offset)."""
    if sampling == "random":
        return ((n_tokens - 1) // num_steps) // batch_size
    return ((n_tokens - 1) // batch_size) // num_steps


def segments(tokens, length: int, device="cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A whole split as one stream, in order: (X, Y) pieces of ``length`` targets, each (1, time),
    Y the tokens that follow X (the cache and dynamic evaluation read a split this way)."""
    ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device)[None]
    for i in range(0, ids.shape[1] - 1, length):
        Y = ids[:, i + 1 : i + 1 + length]
        yield ids[:, i : i + Y.shape[1]], Y


def eval_streams(tokens: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay a whole split out as ``batch_size`` contiguous streams for evaluation.

    Returns (X, Y, mask), each (batch_size, L): every target tokens[1:] appears exactly once;
    the last stream is padded and ``mask`` is False on padding. Each stream is walked from a
    zero state, so only ``batch_size=1`` gives every token its full preceding context.
    """
    n = len(tokens) - 1
    batch_size = max(1, min(batch_size, n))
    length = -(-n // batch_size)
    x = np.zeros(batch_size * length, dtype=np.int32)
    y = np.zeros(batch_size * length, dtype=np.int32)
    m = np.zeros(batch_size * length, dtype=bool)
    x[:n], y[:n], m[:n] = tokens[:-1], tokens[1:], True
    shape = (batch_size, length)
    return (torch.from_numpy(x.reshape(shape)), torch.from_numpy(y.reshape(shape)), torch.from_numpy(m.reshape(shape)))
