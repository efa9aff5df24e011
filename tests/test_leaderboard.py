"""Leaderboard tables from hand-made run directories whose numbers are known: mean ± sample
std over seeds, the best of each metric in bold by its direction, failed runs visible, and the
transposed view carrying exactly the same cells."""

import statistics

import pytest

from mmbench.leaderboard import render, scan_runs
from mmbench.results import atomic_write_json, write_metrics

# posterior -> seed -> (coherence ↑, loss ↓)
VALUES = {"moe": {0: (0.50, 3.0), 1: (0.70, 5.0)}, "poe": {0: (0.20, 1.0), 1: (0.30, 2.0)}}


@pytest.fixture
def results(tmp_path):
    for posterior, seeds in VALUES.items():
        for seed, (coherence, loss) in seeds.items():
            run = tmp_path / "toy" / posterior / f"seed-{seed}"
            run.mkdir(parents=True)
            atomic_write_json(run / "run.json", {"spec": {"dataset": "toy", "posterior": posterior, "seed": seed},
                                                 "status": "done"})
            write_metrics(run / "metrics.jsonl", [
                {"metric": "coherence_x", "value": coherence, "higher_is_better": True, "unit": "share"},
                {"metric": "loss_y", "value": loss, "higher_is_better": False, "unit": "nats"}])
    failed = tmp_path / "toy" / "broken" / "seed-0"
    failed.mkdir(parents=True)
    atomic_write_json(failed / "run.json", {"spec": {"dataset": "toy", "posterior": "broken", "seed": 0},
                                            "status": "failed", "reason": "diverged", "last_finite_epoch": 3})
    return tmp_path


def _cells(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|:")]


def test_means_stds_and_the_best_by_direction(results):
    table = _cells(render(scan_runs(results), "md"))
    header, rows = table[0], {r[1]: r for r in table[1:]}
    assert header[3:] == ["coherence_x ↑", "loss_y ↓"]
    sd = statistics.stdev
    assert rows["moe"][3] == f"**0.600 ± {sd([0.5, 0.7]):.3f}**"  # higher coherence wins
    assert rows["poe"][3] == f"0.250 ± {sd([0.2, 0.3]):.3f}"
    assert rows["poe"][4] == f"**1.50 ± {sd([1.0, 2.0]):.2f}**"  # lower loss wins
    assert rows["moe"][4] == f"4.00 ± {sd([3.0, 5.0]):.2f}"
    # seed 1 of `broken` never ran although the others have one: missing, and shown
    assert rows["broken"][2] == "0/2 (1 failed, 1 missing)" and rows["broken"][3] == "failed"


def test_transposed_table_holds_the_same_cells(results):
    records = scan_runs(results)
    wide = _cells(render(records, "md"))
    tall = _cells(render(records, "md", transpose=True))
    assert tall[0] == ["toy: metric"] + [r[1] for r in wide[1:]]
    assert [r[0] for r in tall[1:]] == wide[0][2:]  # runs, then each metric with its arrow
    for j, row in enumerate(tall[1:], start=2):
        assert row[1:] == [r[j] for r in wide[1:]]
    assert "toy/broken/seed-0: failed: diverged (last finite epoch 3)" in render(records, "md", transpose=True)
    latex = render(records, "latex", transpose=True)
    assert r"coherence\_x $\uparrow$" in latex and r"\textbf{0.600 $\pm$" in latex


def test_transpose_from_the_command_line(results, capsys):
    from mmbench.cli import main

    assert main(["leaderboard", str(results), "--transpose"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| toy: metric") and "| loss_y ↓" in out
