"""The step timings of benchmarks/test_step.py collected in one run, and their summary: every
variant's median and its speed-up over the naive fp32 loop (the seed code's structure),
with what a reader needs to trust them — the machine, its load before and after, threads."""

from __future__ import annotations

import os
import platform

BASELINE = "loop-fp32"
MEDIANS: dict[tuple[str, str], dict[str, float]] = {}  # (nets, posterior) -> {variant: seconds}


def record_step(nets: str, posterior: str, variant: str, median_s: float) -> None:
    MEDIANS.setdefault((nets, posterior), {})[variant] = median_s


def load_averages() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "unknown"


def machine() -> str:
    import torch

    from mmbench.acceleration import cpu_bf16_support
    from mmbench.runner import cpu_name

    return (f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"bf16 instructions: {cpu_bf16_support() or 'none'}, Python {platform.python_version()}")


def summary(load_before: str) -> str:
    """A markdown table: one row per (nets, posterior), each variant's median step and, in
    brackets, how many times faster than the baseline it is."""
    variants = list(dict.fromkeys(v for row in MEDIANS.values() for v in row))
    lines = [f"Step medians (s) and speed-up over {BASELINE}; {machine()}; "
             f"load average (1/5/15 min) {load_before} before, {load_averages()} after.", "",
             "| nets | posterior | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for (nets, posterior), row in MEDIANS.items():
        base = row.get(BASELINE)
        cells = []
        for v in variants:
            if v not in row:
                cells.append("–")
            elif base and v != BASELINE:
                cells.append(f"{row[v]:.3f} ({base / row[v]:.2f}×)")
            else:
                cells.append(f"{row[v]:.3f}")
        lines.append(f"| {nets} | {posterior} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
