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
    return device
