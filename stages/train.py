"""train@<model> stage: `python -m stages.train lstm` trains params.yaml's `lstm` section on
data/tokens and writes models/lstm.pt (best), models/lstm.last.pt, metrics/train/lstm/."""
import sys

from rnnlm.errors import RnnlmError, stage_main
from rnnlm.params import load_model_config
from rnnlm.prepare import load_splits
from rnnlm.train import Trainer, TrainPaths
from rnnlm.vocab import Vocab


@stage_main
def main():
    if len(sys.argv) != 2:
        raise RnnlmError("usage: python -m stages.train {rnn,lstm,gru}")
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
