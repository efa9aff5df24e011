"""How a training step runs fast without changing what it computes: the arithmetic's precision
(fp32, or bf16 autocast where the processor has bf16 arithmetic), the memory layout of
convolutions (channels-last where it pays) and torch.compile with an eager fallback.

These are properties of *how* the arithmetic is carried out, never of the objective: fp32 in
the default layout is the reference, and tests compare each faster path with it on the same
samples. A run records what it used (run.json ``resolved_hparams``: precision, compile).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import MMBenchError
from .settings import CORE

PRECISIONS = CORE["precision"].choices
COMPILE_CHOICES = CORE["compile"].choices
LAYOUTS = CORE["layout"].choices
#: /proc/cpuinfo flags of native bf16 arithmetic (Intel AMX, Intel Cooper Lake+ and AMD Zen 4+ AVX-512)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


# ------------------------------------------------------------------ precision
def cpu_flags() -> set[str]:
    """The processor's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_support() -> str | None:
    """The CPU's native bf16 instructions ('amx_bf16' or 'avx512_bf16'), or None. Without them
    oneDNN emulates bf16, slower than fp32 — so bf16 is offered only where they are."""
    flags = cpu_flags()
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def bf16_support(device: torch.device) -> str | None:
    """What gives ``device`` native bf16 arithmetic (a CPU flag, or 'cuda'), or None."""
    if device.type == "cuda":
        return "cuda" if torch.cuda.is_bf16_supported() else None
    return cpu_bf16_support() if device.type == "cpu" else None


def resolve_precision(requested: str | None, device: torch.device) -> str:
    """'fp32' or 'bf16' for ``requested`` in PRECISIONS (None: fp32). ``auto`` is bf16 where
    the device has native bf16 arithmetic, else fp32; ``bf16`` where it has none is an error."""
    requested = requested or "fp32"
    if requested not in PRECISIONS:
        raise MMBenchError(f"unknown precision '{requested}'; use one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return "fp32"
    native = bf16_support(device)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if native is None:
        where = ("this GPU has no bf16 support" if device.type == "cuda" else
                 f"this CPU has no bf16 instructions ({' or '.join(BF16_CPU_FLAGS)} in /proc/cpuinfo)")
        raise MMBenchError(f"precision bf16 asked for, but {where}; use precision fp32 or auto")
    return "bf16"


def autocast(device: torch.device, precision: str):
    """The context a training step's forward pass runs in: bf16 autocast, or nothing for fp32.
    Densities stay fp32 (the model casts network outputs back, see MultimodalVAE)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ memory layout
def channels_last_pays(precision: str, requested: str | None = None) -> bool:
    """Whether convolutions should run channels-last for ``requested`` in LAYOUTS (None: auto):
    as asked, or under ``auto`` with bf16, the layout of oneDNN's AMX /
    AVX-512-bf16 kernels and of cuDNN's tensor-core ones (MMVAE's MNIST–SVHN nets, moe, batch
    32, K 30, CPU time on a busy Xeon with AMX: bf16 channels-last 1.24x faster than bf16
    contiguous). In fp32 it depends on the processor — 1.3x faster on an EPYC Zen 4 (issue 13),
    12 % slower on that Xeon (its channels-last deconvolution weight gradient) — so fp32 keeps
    the default layout, and with it a plain run's numbers bit for bit, unless channels_last is
    asked for. ``benchmarks/test_step.py`` times both fp32 layouts side by side."""
    requested = requested or "auto"
    if requested not in LAYOUTS:
        raise MMBenchError(f"unknown layout '{requested}'; use one of {', '.join(LAYOUTS)}")
    return requested == "channels_last" or (requested == "auto" and precision == "bf16")


def to_channels_last(model: nn.Module) -> bool:
    """Convolution weights (every 4-d parameter) in channels-last; True when there were any.
    Inputs need no conversion: a convolution with channels-last weights runs channels-last."""
    if not any(p.dim() == 4 for p in model.parameters()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


# ------------------------------------------------------------------ compilation
def compile_pays(requested: str | None, device: torch.device) -> bool:
    """Whether to torch.compile the networks and likelihoods for ``requested`` in
    COMPILE_CHOICES (None: off). ``auto`` compiles on CUDA, where a step of these small
    networks is bound by kernel launches (results/cost.md: 0.2 % of the card's GEMM rate),
    and not on the CPU, where convolutions are most of a step and compiling them was slower
    (DESIGN.md) while the first compile takes minutes."""
    requested = requested or "off"
    if requested not in COMPILE_CHOICES:
        raise MMBenchError(f"unknown compile setting '{requested}'; use one of {', '.join(COMPILE_CHOICES)}")
    return requested == "on" or (requested == "auto" and device.type == "cuda")


class CompiledOrEager:
    """``fn`` compiled by torch.compile; when compiling fails (no C++ compiler, an unsupported
    platform, an operation the compiler cannot take), ``fn`` itself from then on, with one
    warning. An error of ``fn`` itself is raised as it is (the eager call raises it again)."""

    def __init__(self, fn, backend: str = "inductor", **options):
        self.fn = fn
        try:
            self.compiled = torch.compile(fn, backend=backend, **options)
        except Exception as exc:  # torch.compile unavailable here (platform, Python version)
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        self.compiled = None
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        print(f"mmbench: warning: torch.compile failed for {name} ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}); running it uncompiled", file=sys.stderr)

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                result = self.fn(*args, **kwargs)  # raises when fn itself is at fault
                self._give_up(exc)
                return result
        return self.fn(*args, **kwargs)


def compile_networks(model: nn.Module, backend: str = "inductor") -> int:
    """torch.compile each encoder's and decoder's forward and each likelihood in place, each
    with the eager fallback; the objective's Python (DReG hooks, pass counters) stays eager.
    Parameter names do not change (checkpoints stay loadable by an uncompiled model).
    Returns how many functions were wrapped."""
    count = 0
    for attr in ("encoders", "decoders"):
        for net in getattr(model, attr, ()):
            net.forward = CompiledOrEager(net.forward, backend)
            count += 1
    likelihoods = getattr(model, "likelihoods", None)
    if likelihoods is not None:
        for d, fn in enumerate(likelihoods):
            likelihoods[d] = CompiledOrEager(fn, backend)
            count += 1
    return count


def prepare_model(model: nn.Module, precision: str, compile: bool = False, layout: str | None = None) -> dict:
    """Make ``model`` (already on its device) run fast for ``precision``: channels-last where
    it pays or ``layout`` asks for it (a model without convolutions keeps the default), compiled
    when asked. Returns what was done, for run.json."""
    layout = "channels_last" if channels_last_pays(precision, layout) and to_channels_last(model) else "default"
    if compile:
        compile_networks(model)
    return {"precision": precision, "layout": layout, "compile": bool(compile)}
