"""Where the two coherence judge families disagree (mmbench.judges): a metric judged by the
first family (``coherence_cross[a->b]``) and its twin judged by the second
(``coherence_cross_alt[a->b]``) are compared run by run, and a leaderboard cell is flagged when
they differ by more than

    max(0.05, 3 · SE(d))

where d is the second judge's value minus the first's, per seed of the same runs (the same
generated items: both judges read them), and SE(d) its standard error: the seeds' standard
deviation of d over √n with two seeds or more; with one seed, two proportions over the judged
items, √((p₁(1−p₁) + p₂(1−p₂)) / items), where the run recorded how many it judged.

Why this threshold: 3 standard errors keep sampling noise (seeds, finite test sets) from being
read as a judge effect. The 0.05 floor is the size of gap that reorders models in the MMVAE line
of papers' coherence tables (differences of a few points between models are common); a judge
effect below it cannot change such a comparison, one above it can — which is what a reader must
be told.
"""

from __future__ import annotations

import math
import statistics

ALT_SUFFIX = "_alt"
MIN_GAP = 0.05


def twin(metric: str) -> str:
    """The second judge's name for ``metric``: ``coherence_cross[a->b]`` -> ``coherence_cross_alt[a->b]``."""
    family, bracket, detail = metric.partition("[")
    return f"{family}{ALT_SUFFIX}{bracket}{detail}"


def disagreements(records) -> dict[tuple[str, str, str], tuple[float, float, float]]:
    """{(dataset, posterior, metric of the first judge): (its mean, the twin's mean, threshold)}
    for every pair of finished runs' metrics whose means differ by more than the threshold."""
    values: dict[tuple, dict] = {}
    items: dict[tuple, int] = {}
    for r in records:
        if r.status != "done":
            continue
        spec = r.info["spec"]
        for m in r.metrics:
            cell = (spec["dataset"], spec["posterior"], m["metric"])
            values.setdefault(cell, {})[spec["seed"]] = float(m["value"])
            if isinstance(m.get("details"), dict) and isinstance(m["details"].get("items"), int):
                items[cell] = m["details"]["items"]
    flagged = {}
    for (dataset, posterior, metric), first in values.items():
        second = values.get((dataset, posterior, twin(metric)))
        if metric.partition("[")[0].endswith(ALT_SUFFIX) or second is None:
            continue
        seeds = [s for s in first if s in second and math.isfinite(first[s]) and math.isfinite(second[s])]
        if not seeds:
            continue
        diffs = [second[s] - first[s] for s in seeds]
        a, b = statistics.fmean(first[s] for s in seeds), statistics.fmean(second[s] for s in seeds)
        if len(seeds) > 1:
            se = statistics.stdev(diffs) / math.sqrt(len(seeds))
        else:
            n = items.get((dataset, posterior, metric))
            se = math.sqrt((a * (1 - a) + b * (1 - b)) / n) if n and 0 <= a <= 1 and 0 <= b <= 1 else 0.0
        threshold = max(MIN_GAP, 3 * se)
        if abs(b - a) > threshold:
            flagged[(dataset, posterior, metric)] = (a, b, threshold)
    return flagged


def notes(flagged: dict) -> list[str]:
    """One line per flagged cell, for under the table."""
    return [f"† the judges disagree on {dataset}/{posterior} {metric}: {a:.3f} (first judge) against {b:.3f} "
            f"({twin(metric)}), |Δ| {abs(b - a):.3f} > {threshold:.3f}"
            for (dataset, posterior, metric), (a, b, threshold) in flagged.items()]
