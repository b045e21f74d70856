"""train@<model> stage: `python -m stages.train lstm` trains params.yaml's `lstm` section (its `cell`) on
data/tokens and writes models/lstm.pt (best), models/lstm.last.pt, metrics/train/lstm/ and the
wall-clock record metrics/timing/lstm.json.

With train.nproc > 1 it relaunches itself as that many processes under torchrun; started by
torchrun (e.g. on several machines), it is one rank of the run."""

import dataclasses
import sys

from rnnlm import distributed, paths
from rnnlm.device import resolve_device, resolve_precision
from rnnlm.errors import RnnlmError, stage_main
from rnnlm.params import load_model_config, model_key, read_params
from rnnlm.train import Trainer, TrainPaths, check_inputs
from rnnlm.vocab import Vocab, load_splits


@stage_main
def main():
    if len(sys.argv) != 2:
        raise RnnlmError("usage: python -m stages.train <model>  (a section named in params.yaml's models)")
    name = sys.argv[1]
    params = read_params()
    model_cfg, cfg = load_model_config(name, params=params)
    # refuse what cannot run before any work: the device, the precision (auto resolved here, the
    # error naming the key it came from), and with several processes, their setup
    device = resolve_device(cfg.device, model_key(name, "device", params))
    precision = resolve_precision(
        cfg.precision, device, model_cfg.cell, model_cfg.impl, model_key(name, "precision", params)
    )
    cfg = dataclasses.replace(cfg, precision=precision)
    world = distributed.launched()
    relaunch = world is None and cfg.nproc > 1
    if relaunch:
        distributed.check(cfg, device, cfg.nproc, cfg.nproc)
    vocab = Vocab.load(paths.VOCAB)
    splits = load_splits()
    if relaunch:
        check_inputs(cfg, splits["train"], splits["val"])
        distributed.launch(cfg.nproc, "stages.train", [name])
        return
    world = world or distributed.World()
    with distributed.process_group(world, cfg) as device:
        files = TrainPaths.for_model(name) if world.writer else None
        result = Trainer(
            name, model_cfg, cfg, vocab, splits["train"], splits["val"], files, world=world, device=device
        ).run()
    if world.writer:
        print(
            f"{name}: best val perplexity {result['best_val_perplexity']:.3f} at step {result['best_step']} "
            f"(epoch {result['best_epoch']:.2f}), stopped by {result['stopped_by']}, "
            f"{result['tokens_per_second']:,.0f} tok/s ({result['precision']}, {result['device']}"
            f"{' ' + result['cpu_capability'] if result['device'] == 'cpu' else ''}), {result['train_seconds']:.0f}s, "
            f"{world.size} process{'es' if world.size > 1 else ''}"
        )


if __name__ == "__main__":
    main()
