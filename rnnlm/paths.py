"""The pipeline's files, as dvc.yaml names them, relative to the project root.

dvc.yaml is where a reader sees them; the stage scripts and the package take them from here, and
tests/test_code.py checks that dvc.yaml lists each one. Move a file in both places."""

from pathlib import Path

CODE = Path("data/code")  # code: <script>.sha256 per stage
CORPORA = Path("data/corpora")  # download's dependency: local corpus files
RAW = Path("data/raw")  # download: corpus.txt or {train,val,test}.txt, source.json
CLEAN = Path("data/clean")  # clean: the same files, cleaned
CLEAN_METRICS = Path("metrics/clean.json")
VOCAB = Path("data/vocab.json")  # vocab
TOKENS = Path("data/tokens")  # vocab: {train,val,test}.npy
HELDOUT = Path("data/heldout")  # vocab: {val,test}.txt
CORPUS_METRICS = Path("metrics/corpus.json")
VOCAB_METRICS = Path("metrics/vocab")  # vocab: token_freq.csv, zipf.png
MODEL_DIR = Path("models")  # train@<model>: <model>.pt (best), <model>.last.pt
TRAIN_METRICS = Path("metrics/train")  # train@<model>: <model>/ (DVCLive: metrics.json, plots/)
TIMING = Path("metrics/timing")  # train@<model>: <model>.json (wall-clock record)
CHECKPOINTS = Path("checkpoints")  # train@<model>: resume state (not a DVC output)
EVAL = Path("metrics/eval.json")  # evaluate
EVAL_DIR = Path("metrics/eval")  # evaluate: results.{csv,md}, learning_curves.png, test_perplexity.png
SAMPLES = Path("samples")  # sample: <model>.txt, samples.md
REPORT = Path("reports/report.html")  # report
