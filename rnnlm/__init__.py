"""rnnlm: recurrent language models (RNN, LSTM, GRU) as a reproducible DVC pipeline."""

__version__ = "0.1.0"
