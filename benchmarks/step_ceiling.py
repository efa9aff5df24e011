"""How much faster one training step could get at identical fp32 math: Amdahl's bound.

Profiles one step (objective + backward + Adam update) of each posterior on a dataset's networks
with synthetic tensors, splits its CPU time into matrix multiplications, convolutions and all
the rest, and rates the first two against a large fp32 GEMM timed in the same process. If the
matmuls and convolutions already run near that rate, fusing or removing every other kernel can
speed the step up by at most total / (matmul + convolution time) — the ceiling printed.

    python benchmarks/step_ceiling.py [--dataset digits] [--posteriors moe,poe] [--batch 128] [--K 2]

(the defaults are the README run's: digits, its batch and K; torch's default thread count).
Time it alone on the machine; it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from mmbench.cost import gemm_rate, make_step, synthetic_batch, time_step
from mmbench.plugins import get_plugins

CPU = torch.device("cpu")
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")
CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution")


def profile_step(posterior, model, xs, K: int, steps: int = 10) -> dict:
    step = make_step(posterior, model, xs, K, posterior.estimators[0])  # as `mmbench cost` steps
    for _ in range(5):
        step()
    step_ms = 1000 * statistics.median(time_step(step, CPU, 2 * steps, warmup=0))
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_flop_counts()["Global"]
    matmul_flop = sum(v for k, v in flops.items() if "mm" in str(k))
    conv_flop = sum(v for k, v in flops.items() if "convolution" in str(k))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / steps / 1e6
    matmul_s = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / steps / 1e6
    conv_s = sum(e.self_cpu_time_total for e in events if e.key in CONVOLUTIONS) / steps / 1e6
    return {"step_ms": step_ms, "total_s": total, "matmul_s": matmul_s, "conv_s": conv_s,
            "matmul_gflop": matmul_flop / 1e9, "conv_gflop": conv_flop / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--posteriors", default="moe,poe")
    parser.add_argument("--batch", type=int, default=None, help="default: the dataset's")
    parser.add_argument("--K", type=int, default=None, help="default: the dataset's")
    args = parser.parse_args()
    plugins = get_plugins()
    dataset = plugins.datasets.get(args.dataset).configure()
    batch = args.batch or dataset.defaults["batch_size"]
    K = args.K or dataset.defaults["K"]
    latent = dataset.defaults["latent_dim"]
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, {args.dataset} nets, batch {batch}, K {K}")
    peak = gemm_rate(CPU, "fp32", 1536) / 1e9
    print(f"1536² fp32 GEMM: {peak:.0f} GFLOP/s")
    for name in args.posteriors.split(","):
        posterior = plugins.posteriors.get(name)
        torch.manual_seed(0)
        model = posterior.build_model(dataset.modalities, latent)
        r = profile_step(posterior, model, synthetic_batch(model, batch), K)
        heavy = r["matmul_s"] + r["conv_s"]
        rate = lambda gflop, s: f"{gflop / s:.0f} GFLOP/s, {100 * gflop / s / peak:.0f} % of the GEMM" if s else "none"  # noqa: E731
        print(f"{name}: step {r['step_ms']:.1f} ms; matmuls {100 * r['matmul_s'] / r['total_s']:.0f} % of its CPU time "
              f"({rate(r['matmul_gflop'], r['matmul_s'])}), convolutions {100 * r['conv_s'] / r['total_s']:.0f} % "
              f"({rate(r['conv_gflop'], r['conv_s'])}), the rest {100 * (1 - heavy / r['total_s']):.0f} % "
              f"-> at identical math at most {r['total_s'] / heavy:.2f}x faster")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
