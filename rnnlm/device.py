"""Where torch work runs: the `device` params (auto | cpu | cuda)."""
from __future__ import annotations

import torch

from .errors import ParamError


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ParamError naming ``key``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError(key, "cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls in hardware (CPU: AVX512-BF16/AMX; CUDA: Ampere+)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
