"""Metrics from subsets of the modalities, the protocol of the many-modality papers (MoPoE,
mmJSD, MVTCAE, MMVAE+ on PolyMNIST): for every size k = 1 … M−1, the model is given each
subset S of k modalities and read from there.

- ``coherence_cond[k=<k>]``: conditional coherence given k modalities — one latent drawn from
  the model given S (``cross_latents``), every modality outside S decoded and judged; the share
  classified as the item's label, averaged over every subset of size k and every unobserved
  target (the papers' "given 1 / 2 / 3 / 4 modalities").
- ``coherence_cond[k=<k>,-><t>]``: the same for target t alone, over the subsets without t.
- ``latent_acc[k=<k>]`` (in :mod:`mmbench_metrics`, the latent probe's family): the probe fitted
  and scored on the representation given each subset, averaged over the subsets.

With many modalities C(M, k) grows quickly (70 subsets of 4 at M = 8): at most ``subsets`` of
each size are used, drawn by :func:`subsets_of_size` from a fixed seed, so that every run and
every posterior is read on the same subsets. Each value's details say how many there were, how
many were used, and which, when they were sampled.

References: Sutter, Daunhawer, Vogt. Generalized Multimodal ELBO. ICLR 2021 (§5, PolyMNIST).
Palumbo, Daunhawer, Vogt. MMVAE+: Enhancing the Generative Quality of Multimodal VAEs without
Compromises. ICLR 2023.
"""

from __future__ import annotations

import math
import random
from itertools import combinations

import torch
from torch import Tensor

from mmbench.api import Metric, MetricValue, Option
from mmbench.judges import predict

from .chance import chance

#: mixed into the sampling seed: the subsets drawn never depend on a run's seed
SUBSET_SEED = "mmbench-subsets"
DEFAULT_SUBSETS = 10  # every subset up to M = 5 (C(5, 2) = 10); sampled from M = 6 on
DEFAULT_ITEMS = 2000

SUBSETS_OPTION = Option("subsets", DEFAULT_SUBSETS, "subsets of each size k used at most; where C(M, k) is larger "
                        "they are sampled, the same for every run (default: 10, all of them up to M = 5)",
                        type=int, low=1)


def subsets_of_size(num_modalities: int, k: int, limit: int | None = None) -> tuple[list[tuple[int, ...]], int]:
    """(the subsets of size k of range(M) to evaluate, in order; how many there are): all of
    them when there are at most ``limit``, else ``limit`` of them drawn without replacement by a
    generator seeded with (M, k) alone — the same draw in every run, process and posterior."""
    every = list(combinations(range(num_modalities), k))
    if limit is None or len(every) <= limit:
        return every, len(every)
    rng = random.Random(f"{SUBSET_SEED}:{num_modalities}:{k}")
    return sorted(rng.sample(every, limit)), len(every)


def subset_details(names: list[str], chosen: list[tuple[int, ...]], total: int) -> dict:
    """How a value's subsets were chosen, for its MetricValue details."""
    details = {"subsets_used": len(chosen), "subsets_of": total}
    if len(chosen) < total:
        details["subsets"] = [",".join(names[m] for m in s) for s in chosen]
    return details


def mean_and_standard_error(hits: list[Tensor]) -> tuple[float, float]:
    """The mean of per-item outcomes [N] averaged over several readings (subsets, targets), and
    its standard error over the N items: each item's mean over the readings is one draw, so the
    readings' correlation through the shared items is accounted for."""
    per_item = torch.stack(hits).float().mean(0)
    n = per_item.numel()
    se = per_item.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return per_item.mean().item(), se


class ConditionalCoherence(Metric):
    name = "coherence_cond"
    criterion = "cross coherence"
    higher_is_better = True
    unit = "fraction"
    description = ("given each subset of k modalities (k = 1..M-1): one latent, every other modality decoded and "
                   "judged; share classified as the item's label, per k and per k and target")
    options = (SUBSETS_OPTION,
               Option("items", DEFAULT_ITEMS, "fixed test pairs each subset is read on (default: 2000; the "
                      "standard error is in each value's details)", type=int, low=1))

    def skip_reason(self, ctx):
        if len(ctx.names) < 3:
            return "needs three or more modalities (with two, coherence_cross is every subset)"
        return None if any(ctx.judge(m) is not None for m in range(len(ctx.names))) else "no modality has a judge"

    @torch.no_grad()
    def evaluate(self, ctx):
        names, M = ctx.names, len(ctx.names)
        settings = self.option_values
        rows = ctx.test_rows(settings["items"])
        xs = ctx.data.test.batch(rows, names)
        labels = ctx.data.test.labels[rows]
        judged = [m for m in range(M) if ctx.judge(m) is not None]
        summary, per_target = [], []
        by_size = {k: subsets_of_size(M, k, settings["subsets"]) for k in range(1, M)}
        wanted = [s for chosen, _ in by_size.values() for s in chosen if any(t not in s for t in judged)]
        # every subset's latents from one encoding of each modality's items
        latents = dict(zip(wanted, ctx.read_subsets(dict(enumerate(xs)), wanted, "cross_latents")))
        for k, (chosen, total) in by_size.items():
            hits: dict[int, list[Tensor]] = {t: [] for t in judged}
            for subset in chosen:
                targets = [t for t in judged if t not in subset]
                if not targets:
                    continue
                z = latents[subset]
                for t in targets:
                    hits[t].append(predict(ctx.judge(t)[0], ctx.decode_means(t, z)) == labels)
            how = {**subset_details(names, chosen, total), "items": len(rows),
                   "chance": chance(labels)}
            every = [h for t in judged for h in hits[t]]
            if not every:
                continue
            mean, se = mean_and_standard_error(every)
            summary.append(MetricValue(f"coherence_cond[k={k}]", mean, {**how, "readings": len(every), "se": se}))
            for t in judged:
                if hits[t]:
                    mean, se = mean_and_standard_error(hits[t])
                    per_target.append(MetricValue(f"coherence_cond[k={k},->{names[t]}]", mean,
                                                  {**how, "readings": len(hits[t]), "se": se}))
        # The per-k summary first: it is what the leaderboard shows, left to right.
        yield from summary
        yield from per_target
