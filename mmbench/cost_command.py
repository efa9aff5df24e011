"""``mmbench cost``: its arguments and what it does with them (the measuring is mmbench.cost)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import MMBenchError
from .settings import MODALITY_COUNT

DEFAULT_OUT = Path("results/cost")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_parser(sub) -> None:
    cost = sub.add_parser("cost", help="time one training step against M (and K, batch size): M² against linear")
    cost.add_argument("--dataset", help=f"a dataset declaring a `{MODALITY_COUNT}` option (default: the first so)")
    cost.add_argument("--posteriors", type=comma_list, help="posterior names, comma-separated (default: every one)")
    cost.add_argument("--modalities", default="2..8", help="M values: a range 2..8 or a list 2,4,8 (default 2..8)")
    cost.add_argument("--K", "-K", type=positive_int, default=5, help="importance samples per expert (default 5)")
    cost.add_argument("--batch-size", type=positive_int, default=32, help="default 32")
    cost.add_argument("--latent-dim", type=positive_int, help="default: the dataset's")
    cost.add_argument("--Ks", default="", help="also sweep K at the first M, e.g. 1,5,30")
    cost.add_argument("--batch-sizes", default="", help="also sweep the batch size at the first M, e.g. 16,64,128")
    cost.add_argument("--repeats", type=positive_int, default=5, help="timed steps per cell (default 5)")
    cost.add_argument("--warmup", type=int, default=0,
                      help="untimed steps per cell besides the two that count FLOPs and measure memory (default 0)")
    cost.add_argument("--estimator", help="gradient estimator (default: each posterior's own)")
    cost.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    cost.add_argument("--precision", default="fp32",
                      help="fp32 (default), bf16 (autocast; where the CPU or GPU has bf16 instructions) or auto")
    cost.add_argument("--compile", action="store_true",
                      help="torch.compile the encoders, decoders and likelihoods (as `mmbench run --compile on`)")
    cost.add_argument("--layout", default="auto",
                      help="memory layout of the convolutions, as `mmbench run --layout` (default auto: "
                           "channels-last with bf16 only)")
    cost.add_argument("--threads", type=positive_int, help="CPU threads (torch.set_num_threads)")
    cost.add_argument("--gemm-size", type=positive_int, help="side of the reference matmul (default 8192 on CUDA, 1536 on CPU)")
    cost.add_argument("--out", default=str(DEFAULT_OUT), help=f"where cost.json/.md/.png go (default {DEFAULT_OUT})")
    cost.set_defaults(func=run)


def parse_range(text: str) -> list[int]:
    """'2..8' or '2,4,8' -> a list of ints; raises MMBenchError on anything else."""
    try:
        if ".." in text:
            lo, hi = (int(t) for t in text.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise MMBenchError(f"expected a range like 2..8 or a list like 2,4,8 of positive integers, got '{text}'")
    return values


def sweepable_dataset(plugins):
    """The first registered dataset (by name) that declares the option the M sweep sets."""
    for dataset in plugins.datasets:
        if any(o.name == MODALITY_COUNT for o in dataset.options):
            return dataset
    raise MMBenchError(f"no dataset here declares a `{MODALITY_COUNT}` option to sweep M over; name one with --dataset")


def run(args) -> int:
    modalities = parse_range(args.modalities)
    Ks = parse_range(args.Ks) if args.Ks else []
    batches = parse_range(args.batch_sizes) if args.batch_sizes else []
    if args.warmup < 0:
        raise MMBenchError(f"--warmup must be 0 or more, got {args.warmup}")

    import torch

    from . import cost
    from .acceleration import channels_last_pays, resolve_precision
    from .device import resolve_device
    from .plugins import get_plugins
    from .results import atomic_write_json, atomic_write_text, utc_now
    from .runner import cpu_name

    plugins = get_plugins(args.plugins_dir)
    dataset = plugins.datasets.get(args.dataset) if args.dataset else sweepable_dataset(plugins)
    posteriors = [plugins.posteriors.get(p) for p in args.posteriors] if args.posteriors else list(plugins.posteriors)
    for M in modalities:
        dataset.configure(**{MODALITY_COUNT: M})  # a dataset without the option, or an M it refuses, fails here
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    channels_last_pays(precision, args.layout)  # an unknown layout: one line, before any measuring
    if args.threads:
        torch.set_num_threads(args.threads)
    latent_dim = args.latent_dim or dataset.defaults.get("latent_dim", 20)
    gemm_size = args.gemm_size or cost.default_gemm_size(device)
    machine = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "precision": precision,
               "compile": args.compile, "layout": args.layout, "gemm_size": gemm_size, "command": " ".join(["mmbench", *sys.argv[1:]]),
               "started": utc_now(), "load_average": {"before": cost.load_averages()}}
    gemm = cost.gemm_rate(device, precision, gemm_size)
    print(f"mmbench cost: {dataset.name}, {device}, {precision}{', compiled' if args.compile else ''}, "
          f"{torch.get_num_threads()} threads, load {machine['load_average']['before']}; large GEMM {gemm / 1e9:.1f} GFLOP/s",
          file=sys.stderr)

    def progress(c):
        print(f"  {c.posterior:<10} M={c.M} K={c.K} batch={c.batch}: {c.median_ms:.1f} ms, "
              f"{c.passes_counted:g} passes, decoders {100 * c.decoder_flop_share:.0f} % of FLOP, load {c.load1:.2f}",
              file=sys.stderr)

    cells = cost.run_grid(dataset, posteriors, modalities=modalities, K=args.K, batch=args.batch_size,
                          latent_dim=latent_dim, device=device, Ks=Ks, batches=batches, progress=progress,
                          repeats=args.repeats, warmup=args.warmup, precision=precision, compile=args.compile,
                          layout=args.layout,
                          estimator=args.estimator, gemm=gemm)
    gemm_after = cost.gemm_rate(device, precision, gemm_size)
    if gemm_after > gemm:  # every fraction against the machine's best measured rate
        for c in cells:
            c.gemm_fraction *= gemm / gemm_after
    machine.update(gemm_gflops=gemm / 1e9, gemm_gflops_after=gemm_after / 1e9, finished=utc_now())
    machine["load_average"]["after"] = cost.load_averages()
    fits = cost.exponents(cells)
    text = f"{cost.cells_table(cells)}\n\n{cost.exponents_table(fits)}\n"
    print(text)
    out = Path(args.out)
    atomic_write_json(out / "cost.json", {"machine": machine, "cells": [c.row() for c in cells], "exponents": fits})
    atomic_write_text(out / "cost.md", f"{cost.machine_header(machine)}\n\n{text}")
    cost.plot(cells, out / "cost.png")
    print(f"wrote {out / 'cost.json'}, {out / 'cost.md'}, {out / 'cost.png'}", file=sys.stderr)
    return 0
