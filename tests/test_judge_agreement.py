"""The leaderboard flags a cell where the two judge families disagree by more than
max(0.05, 3 standard errors of their per-seed difference), and only then."""

import math
import statistics

import pytest

from mmbench.judge_agreement import MIN_GAP, disagreements, twin
from mmbench.leaderboard import render, scan_runs
from mmbench.results import atomic_write_json, write_metrics

# posterior -> metric -> per seed (first judge, second judge)
VALUES = {
    "far": {"coherence_cross[a->b]": [(0.50, 0.70), (0.52, 0.71), (0.48, 0.69)]},     # Δ 0.2, steady
    "near": {"coherence_cross[a->b]": [(0.50, 0.53), (0.52, 0.55), (0.48, 0.50)]},    # Δ 0.03 < 0.05
    "noisy": {"coherence_cross[a->b]": [(0.50, 0.40), (0.40, 0.60), (0.45, 0.75)]},   # Δ 0.13, 3 SE larger
}


def _write(root, dataset, posterior, seed, rows):
    run = root / dataset / posterior / f"seed-{seed}"
    run.mkdir(parents=True)
    atomic_write_json(run / "run.json", {"spec": {"dataset": dataset, "posterior": posterior, "seed": seed}, "status": "done"})
    write_metrics(run / "metrics.jsonl", rows)


def _row(metric, value, items=None):
    row = {"metric": metric, "value": value, "higher_is_better": True, "unit": "fraction"}
    return {**row, "details": {"items": items}} if items else row


@pytest.fixture
def records(tmp_path):
    for posterior, metrics in VALUES.items():
        for seed in range(3):
            rows = []
            for metric, pairs in metrics.items():
                rows += [_row(metric, pairs[seed][0]), _row(twin(metric), pairs[seed][1])]
            _write(tmp_path, "toy", posterior, seed, rows)
    return scan_runs(tmp_path)


def test_twin_names_follow_the_suffix_convention():
    assert twin("coherence_cross[a->b]") == "coherence_cross_alt[a->b]"
    assert twin("coherence_joint") == "coherence_joint_alt"


def test_only_a_gap_beyond_the_floor_and_the_noise_is_flagged(records):
    flagged = disagreements(records)
    assert set(flagged) == {("toy", "far", "coherence_cross[a->b]")}
    a, b, threshold = flagged[("toy", "far", "coherence_cross[a->b]")]
    diffs = [s - f for f, s in VALUES["far"]["coherence_cross[a->b]"]]
    assert a == pytest.approx(0.50) and b == pytest.approx(0.70)
    assert threshold == max(MIN_GAP, 3 * statistics.stdev(diffs) / math.sqrt(3)) == MIN_GAP
    noisy = [s - f for f, s in VALUES["noisy"]["coherence_cross[a->b]"]]
    assert abs(statistics.fmean(noisy)) > MIN_GAP and abs(statistics.fmean(noisy)) < 3 * statistics.stdev(noisy) / math.sqrt(3)


def test_the_table_marks_both_cells_and_says_by_how_much(records):
    text = render(records, "md")
    far = next(line for line in text.splitlines() if "| far" in line)
    assert far.count("†") == 2
    assert all("†" not in line for line in text.splitlines() if "| near" in line or "| noisy" in line)
    assert ("- † the judges disagree on toy/far coherence_cross[a->b]: 0.500 (first judge) against 0.700 "
            "(coherence_cross_alt[a->b]), |Δ| 0.200 > 0.050") in text


def test_one_seed_reads_the_noise_of_the_judged_items(tmp_path):
    # Δ 0.08 over 100 items: 3 SE = 3·√((.5·.5 + .42·.58)/100) ≈ 0.21 — noise; over 10,000: 0.021 — flagged
    for posterior, items in (("few", 100), ("many", 10_000)):
        _write(tmp_path, "toy", posterior, 0, [_row("coherence_joint", 0.50, items), _row("coherence_joint_alt", 0.42, items)])
    flagged = disagreements(scan_runs(tmp_path))
    assert set(flagged) == {("toy", "many", "coherence_joint")}
    assert flagged[("toy", "many", "coherence_joint")][2] == MIN_GAP
