"""train@<model> stage: `python stages/train.py lstm` trains params.yaml's `lstm` section on
data/tokens and writes models/lstm.pt (best), models/lstm.last.pt, metrics/train/lstm/."""
import sys
from pathlib import Path

# Import the package beside this script, not another checkout installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnlm.errors import RnnlmError, stage_main  # noqa: E402
from rnnlm.params import load_model_config  # noqa: E402
from rnnlm.prepare import load_splits  # noqa: E402
from rnnlm.train import Trainer, TrainPaths  # noqa: E402
from rnnlm.vocab import Vocab  # noqa: E402


@stage_main
def main():
    if len(sys.argv) != 2:
        raise RnnlmError("usage: python stages/train.py {rnn,lstm,gru}")
    name = sys.argv[1]
    model_cfg, cfg = load_model_config(name)
    vocab = Vocab.load("data/vocab.json")
    splits = load_splits()
    result = Trainer(name, model_cfg, cfg, vocab, splits["train"], splits["val"], TrainPaths.for_model(name)).run()
    print(f"{name}: best val perplexity {result['best_val_perplexity']:.3f} at step {result['best_step']} "
          f"(epoch {result['best_epoch']:.2f}), stopped by {result['stopped_by']}, "
          f"{result['tokens_per_second']:,.0f} tok/s, {result['train_seconds']:.0f}s")


if __name__ == "__main__":
    main()
