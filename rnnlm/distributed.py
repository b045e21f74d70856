"""Data-parallel training on PyTorch's own engine: torchrun starts ``train.nproc`` processes and
DistributedDataParallel averages their gradients.

Each optimizer step's global minibatch (``train.batch_size`` streams) is cut into ``nproc`` equal
row blocks, one per rank (:meth:`World.rows`). A rank's loss is the mean over its block and DDP's
all-reduce averages the gradients, so every step applies the gradient of the whole minibatch's mean
loss, as one process would. Rank 0 alone validates, logs and writes files; its validation result
is broadcast, so lr decay and early stopping agree on every rank. Dropout masks are drawn per rank,
so with dropout a run agrees with the one-process run in distribution, not bit for bit; without
dropout they agree to rounding.

``python -m stages.train lstm`` with ``train.nproc > 1`` relaunches itself under torchrun
(:func:`launch`). Started by torchrun directly (several machines: see docs/internals.md) it is one worker
(:func:`launched`).
"""

from __future__ import annotations

import gc
import os
import signal
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import cores, resolve_device
from .errors import ParamError, RnnlmError
from .params import TrainConfig


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank on this machine: picks the GPU

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's block of the global minibatch's rows."""
        block = batch_size // self.size
        return slice(self.rank * block, (self.rank + 1) * block)

    # Collectives of small Python objects, once per validation point (no-ops in one process).
    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def launched() -> World | None:
    """The world torchrun made this process part of, or None when torchrun did not start it."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))


def backend(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "nccl" if device.type == "cuda" else "gloo"


def check(cfg: TrainConfig, device: torch.device, size: int, local_size: int) -> None:
    """Refuse, before any work, a world of ``size`` processes (``local_size`` on this machine)
    that cannot run ``cfg`` on ``device``."""
    if size == 1:
        return
    if device.type not in ("cpu", "cuda"):
        raise ParamError(
            "train.nproc",
            f"multi-process training runs on cpu (gloo) or cuda (nccl), not on {device.type}; set train.nproc: 1",
        )
    if backend(cfg, device) == "nccl" and device.type != "cuda":
        raise ParamError(
            "train.backend", "nccl needs CUDA devices, and train.device resolves to cpu here; use backend auto or gloo"
        )
    if cfg.batch_size % size:
        raise ParamError(
            "train.batch_size",
            f"batch_size={cfg.batch_size} does not split evenly over "
            f"{size} processes (train.nproc); make it a multiple of {size}",
        )
    if device.type == "cuda" and local_size > torch.cuda.device_count():
        raise ParamError(
            "train.nproc",
            f"{local_size} processes, but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s): one process per GPU",
        )
    if device.type == "cpu" and local_size > cores():
        raise ParamError("train.nproc", f"{local_size} processes, but this machine has {cores()} CPU cores")


def launch(nproc: int, module: str, args: list[str]) -> None:
    """Run ``python -m module args`` as ``nproc`` processes under torchrun on this machine; a
    failed or killed rank stops them all and is reported as one error."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun would set 1 thread per process; share the cores instead (train.threads overrides).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))
    argv = ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--module", module, *args]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # torchrun replaces them
    try:
        run(get_args_parser().parse_args(argv))
    except SignalException:  # Ctrl-C or SIGTERM: torchrun has stopped the ranks
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == 1:  # a rank reported an error (printed above) and stopped
            raise RnnlmError(
                f"{module} {' '.join(args)}: stopped by the error above (rank {rank} of {nproc} exited first)"
            ) from None
        how = (
            f"was killed by {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exited with status {failure.exitcode}"
        )
        raise RnnlmError(
            f"{module} {' '.join(args)}: rank {rank} of {nproc} {how}, so every rank stopped; "
            "the next run resumes after the last validation point"
        ) from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextmanager
def process_group(world: World, cfg: TrainConfig):
    """Join the processes of ``world`` (nothing to do for one) for the duration of the block;
    yields the device of this rank (on CUDA, the GPU of its local rank)."""
    device = resolve_device(cfg.device, "train.device")
    if world.size == 1:
        yield device
        return
    check(cfg, device, world.size, int(os.environ.get("LOCAL_WORLD_SIZE", world.size)))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend(cfg, device), rank=world.rank, world_size=world.size)
    # DDP's reducer holds gloo work objects: it is freed here, while the group lives (gc.collect),
    # on success and on error alike; a rank that destroyed them in the interpreter's teardown could
    # abort (SIGABRT, "terminate called without an active exception").
    try:
        yield device
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)  # the finished frames let go of the trainer and its DDP
        gc.collect()
        # gloo and nccl report a vanished peer as a RuntimeError
        if isinstance(exc, RuntimeError) and (
            isinstance(exc, dist.DistError) or any(k in str(exc) for k in ("gloo", "NCCL", "Connection"))
        ):
            problem = str(exc).split("] ", 1)[-1].split(". ")[0]
            raise RnnlmError(f"rank {world.rank} of {world.size} lost contact with another rank ({problem})") from None
        raise  # the group itself is left to the process's exit: a peer may still wait in a collective
    # After success every rank leaves together.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
