"""rnnlm: recurrent language models (RNN, LSTM, GRU) and a small Transformer as a reproducible DVC pipeline."""

import os

# torch's CPU threads (OpenMP, GNU libgomp) spin-wait for each other between parallel regions, by
# default for 300,000 spins. When another process holds a core, the spinning thread burns the
# time slice its descheduled peer needs: two threads beside one busy process trained the PTB LSTM
# 3-4x slower than one thread. A short spin (read by libgomp when torch loads, so set before
# `import torch`) keeps the idle speed and degrades gracefully; see docs/benchmarks.md, "Beside a busy process". An
# explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.1.0"
