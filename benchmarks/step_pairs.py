"""Step variants of benchmarks/test_step.py timed in turn, round by round, and their speed-ups
over the baseline as the median of each round's own ratio.

pytest-benchmark times one variant's rounds, then the next variant's: on a machine whose speed
drifts over minutes (a shared virtual machine) the ratios between variants then carry the drift.
Here every round runs each variant once, in an order rotated from round to round, and each
variant's speed-up is the median over rounds of (baseline's time / variant's time) in that round.

    python benchmarks/step_pairs.py                       # moe on MNIST–SVHN's nets, the headline
    python benchmarks/step_pairs.py --nets digits --posteriors moe,poe --rounds 9

Time it alone on the machine; it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time

from step_summary import load_averages, machine
from test_step import NETS, VARIANTS, Unavailable, build_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="mnist-svhn", choices=list(NETS))
    parser.add_argument("--posteriors", default="moe")
    parser.add_argument("--variants",
                        default="loop-fp32,stacked-fp32,stacked-fp32-micro,stacked-bf16,stacked-bf16-micro",
                        help=f"comma-separated, the first the baseline; of {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    variants = args.variants.split(",")
    print(f"{machine()}; load average before {load_averages()}")
    print(f"| nets | posterior | {' | '.join(variants)} |\n|---|---|{'---|' * len(variants)}")
    for name in args.posteriors.split(","):
        steps, info = {}, {}
        for v in variants:
            try:
                steps[v], info[v] = build_step(args.nets, name, v)
                steps[v]()  # warm-up
            except Unavailable:
                pass
        times: dict[str, list[float]] = {v: [] for v in steps}
        for r in range(args.rounds):
            order = list(steps)[r % len(steps):] + list(steps)[:r % len(steps)]
            for v in order:
                t0 = time.perf_counter()
                steps[v]()
                times[v].append(time.perf_counter() - t0)
        base = times.get(variants[0])
        cells = []
        for v in variants:
            if v not in times:
                cells.append("–")
                continue
            median = statistics.median(times[v])
            if base is None or v == variants[0]:
                cells.append(f"{median:.3f}")
                continue
            ratios = [b / t for b, t in zip(base, times[v])]
            chunks = info[v].get("micro_batch")
            micro = "" if chunks is None else f", chunks of {chunks}" if chunks < info[v]["batch"] else ", whole"
            spread = f"{min(ratios):.2f}–{max(ratios):.2f}"
            cells.append(f"{median:.3f} ({statistics.median(ratios):.2f}×, {spread}{micro})")
        batch, K = info[next(iter(info))]["batch"], info[next(iter(info))]["K"]
        print(f"| {args.nets} (batch {batch}, K {K}) | {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nmedian step (s) over {args.rounds} rounds; in brackets the median, min and max over rounds of "
          f"{variants[0]}'s time / the variant's in the same round; load average after {load_averages()}")


if __name__ == "__main__":
    main()
