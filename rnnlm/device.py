"""Where torch work runs: the `device` params (auto | cpu | cuda | mps)."""
from __future__ import annotations

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


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls in hardware (CPU: AVX512-BF16/AMX; CUDA: Ampere+)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: torch.device, key: str = "train.precision") -> None:
    """fp16 autocast with loss scaling is for CUDA GPUs (those without fast bfloat16); CPUs lack
    float16 kernels for some layers (oneDNN's LSTM), so it is refused there before any work."""
    if precision == "fp16" and device.type != "cuda":
        raise ParamError(key, f"fp16 is for CUDA GPUs, and the device here is {device.type}; use fp32 or bf16")
