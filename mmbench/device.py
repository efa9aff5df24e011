"""Picking the compute device at run time: CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from .errors import MMBenchError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MMBenchError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MMBenchError(f"device '{name}' asked for, but CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise MMBenchError(f"device '{name}' asked for, but this machine has {count} CUDA device(s) "
                           f"(cuda:0..cuda:{count - 1}); use --device cuda or auto")
    return device
