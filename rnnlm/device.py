"""Where torch work runs: the `device` params (auto | cpu | cuda | mps)."""

from __future__ import annotations

import os
import time

import torch

from .errors import ParamError

AUTO_ORDER = ("cuda", "mps")  # `auto` takes the first of these accelerators that is present, else the CPU


def available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return kind == "cpu"


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` -> the machine's accelerator (``torch.accelerator``) when it is CUDA or Apple mps,
    else the CPU; an accelerator that is not there is a ParamError naming ``key``."""
    if name == "auto":
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        return accelerator if accelerator is not None and accelerator.type in AUTO_ORDER else torch.device("cpu")
    if not available(name):
        raise ParamError(key, f"{name} requested but no {name} device is available; use auto or cpu")
    return torch.device(name)


def cpu_capability() -> str:
    """The CPU's instruction-set class as torch's kernels see it (``AVX2``, ``AVX512``, ...): what a
    CPU speed figure names. ``ATEN_CPU_CAPABILITY=avx2`` lowers it (see README, Every CPU)."""
    return torch.backends.cpu.get_cpu_capability()


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls in hardware (CPU: AVX512-BF16/AMX, as oneDNN
    sees it, so ``ONEDNN_MAX_CPU_ISA=AVX2`` turns it off; CUDA: Ampere+)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_amx() -> bool:
    """Whether the CPU has AMX tiles (Intel Sapphire Rapids and later), where bf16 pays on a CPU."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, cell: str, impl: str, key: str = "train.precision") -> str:
    """The precision a model trains in: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` is bf16 where the device computes bfloat16 natively and the model gains from it (any
    model on a CUDA GPU; on a CPU with AMX the torch LSTM, whose oneDNN kernel runs in bf16: the
    torch RNN and GRU and the scratch cells' time loops measured no faster, and without AMX an
    AVX512-BF16 CPU trained the recipes' LSTMs 0.70-0.79x as fast as in fp32), fp32 elsewhere. An explicit
    ``bf16`` on a device without native bfloat16 (oneDNN has no bf16 LSTM kernel there: it fails)
    and ``fp16`` off CUDA are ParamErrors naming ``key``, raised before any work."""
    native = bf16_native(device)
    if precision == "auto":
        gains = device.type == "cuda" or (cell == "lstm" and impl == "torch" and cpu_amx())
        return "bf16" if native and gains else "fp32"
    if precision == "bf16" and not native:
        where = f"this CPU ({cpu_capability()})" if device.type == "cpu" else f"this {device.type} device"
        raise ParamError(
            key,
            f"bf16 needs native bfloat16 matmuls (AVX512-BF16 or AMX CPUs, Ampere or newer "
            f"GPUs), and {where} has none; use auto (bf16 where the device has it, fp32 "
            "elsewhere) or fp32",
        )
    if precision == "fp16" and device.type != "cuda":
        raise ParamError(key, f"fp16 is for CUDA GPUs, and the device here is {device.type}; use auto or fp32")
    return precision


def busy_cores(seconds: float = 0.25) -> float | None:
    """How many cores other work kept busy over the next ``seconds`` (Linux's /proc/stat; this
    process sleeps meanwhile), or None where that cannot be read."""

    def sample() -> tuple[float, float]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [float(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(ticks), ticks[3] + ticks[4]

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)  # /proc/stat sums every CPU


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_threads(default: int) -> tuple[int, float | None]:
    """``train.threads: 0``: torch's default thread count, lowered to the cores that other work
    leaves free at the start (at least 1). Threads that wait for a peer descheduled by a busy
    neighbour lose more than they gain. Returns (threads, busy cores measured or None)."""
    if default <= 1:
        return default, None
    busy = busy_cores()
    if busy is None:
        return default, None
    return max(1, min(default, cores() - round(busy))), busy
