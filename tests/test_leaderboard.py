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


def _many_modalities(root, dataset, M, seconds=None):
    """One finished run of ``dataset`` with the pairwise and per-k columns of M modalities."""
    names = [f"m{j}" for j in range(M)]
    rows = [{"metric": f"latent_acc[{n}]", "value": 0.9} for n in names]
    rows += [{"metric": f"coherence_cross[{a}->{b}]", "value": 0.5} for a in names for b in names if a != b]
    rows += [{"metric": f"loglik[{a},{b}]", "value": -1.0} for i, a in enumerate(names) for b in names[i + 1:]]
    rows += [{"metric": f"coherence_cond[k={k}]", "value": 0.1 * k} for k in range(1, M)]
    rows += [{"metric": f"coherence_cond[k={k},->{t}]", "value": 0.1 * k} for k in range(1, M) for t in names]
    run = root / dataset / "moe" / "seed-0"
    run.mkdir(parents=True)
    atomic_write_json(run / "run.json", {"spec": {"dataset": dataset, "posterior": "moe", "seed": 0}, "status": "done",
                                         "train_s": 100.0, "eval_s": 30.0, "eval_s_per_metric": seconds or {}})
    write_metrics(run / "metrics.jsonl", [{**r, "higher_is_better": True, "unit": "u"} for r in rows])


def test_columns_of_pairs_are_left_out_above_three_modalities(tmp_path):
    _many_modalities(tmp_path, "five", 5)
    _many_modalities(tmp_path, "three", 3)
    records = scan_runs(tmp_path)
    header = _cells(render(records, "md"))[0]
    shown = {h.rsplit(" ", 1)[0] for h in header[3:]}
    five, three = [f"m{j}" for j in range(5)], ["m0", "m1", "m2"]
    # five's 20 + 10 + 20 pair columns go, but for those three shares (m0..m2); every summary stays
    assert {f"coherence_cond[k={k}]" for k in range(1, 5)} | {f"latent_acc[{n}]" for n in five} <= shown
    assert {f"coherence_cross[{a}->{b}]" for a in three for b in three if a != b} <= shown
    assert "coherence_cross[m0->m4]" not in shown and "loglik[m0,m4]" not in shown
    assert "coherence_cond[k=2,->m1]" in shown and "coherence_cond[k=4,->m3]" not in shown
    left_out = (20 - 6) + (10 - 3) + (4 * 5 - 2 * 3)
    assert len(shown) == len(header) - 3 == 4 + 5 + 6 + 3 + 2 * 3  # three's summaries are among five's
    assert f"{left_out} columns of modality pairs left out" in render(records, "md")
    every = {h.rsplit(" ", 1)[0] for h in _cells(render(records, "md", pairs=True))[0][3:]}
    assert len(every) == len(shown) + left_out and "coherence_cross[m0->m4]" in every
    assert "left out" not in render(records, "md", pairs=True)
    csv = render(records, "csv")
    assert "coherence_cross[m0->m4]" in csv and "left out" not in csv


def test_what_names_a_pair():
    from mmbench.leaderboard import pair_modalities

    assert pair_modalities("loglik[m0|m1,m2]") == ["m0", "m1", "m2"] and pair_modalities("synergy[a|a,b]") == ["a", "a", "b"]
    assert pair_modalities("coherence_cond[k=2,->m3]") == ["m3"] and pair_modalities("cca_cross[image->text]") == ["image", "text"]
    assert [pair_modalities(n) for n in ("latent_acc[m0]", "coherence_cond[k=2]", "coherence_joint", "step_ms")] == [None] * 4


def test_pairs_and_the_time_per_metric_from_the_command_line(tmp_path, capsys):
    from mmbench.cli import main

    _many_modalities(tmp_path, "five", 5, seconds={"loglik": 20.0, "coherence_cross": 4.5, "latent_acc": 5.5})
    assert main(["leaderboard", str(tmp_path)]) == 0
    assert "coherence_cross[m0->m1]" not in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path), "--pairs", "--provenance"]) == 0
    out = capsys.readouterr().out
    assert "coherence_cross[m0->m1]" in out
    assert "training 100, evaluation 30: loglik 20.0, latent_acc 5.5, coherence_cross 4.5." in out


def test_tall_table_groups_metrics_by_criterion_with_chance(tmp_path):
    """The runs' rows declare each metric's criterion and chance (in details): the tall table
    puts a heading row per criterion (the paper's four first, in its order; cost last), with the chance level
    its metrics share, or each metric its own where they differ; every cell is kept."""
    rows = [{"metric": "train_s", "value": 12.0, "criterion": "cost"},
            {"metric": "latent_acc[a]", "value": 0.9, "criterion": "latent factorisation", "details": {"chance": 0.1}},
            {"metric": "coherence_cross[a->b]", "value": 0.8, "criterion": "cross coherence",
             "details": {"chance": 0.1}},
            {"metric": "coherence_joint", "value": 0.4, "criterion": "joint coherence", "details": {"chance": 0.01}},
            {"metric": "coherence_cross[b->a]", "value": 0.7, "criterion": "cross coherence",
             "details": {"chance": 0.1}},
            {"metric": "odd[x]", "value": 0.5, "criterion": "mixed", "details": {"chance": 0.5}},
            {"metric": "odd[y]", "value": 0.5, "criterion": "mixed", "details": {"chance": 0.25}}]
    for posterior in ("moe", "poe"):
        run = tmp_path / "toy" / posterior / "seed-0"
        run.mkdir(parents=True)
        atomic_write_json(run / "run.json", {"spec": {"dataset": "toy", "posterior": posterior, "seed": 0},
                                             "status": "done"})
        write_metrics(run / "metrics.jsonl", [{**r, "higher_is_better": True, "unit": "u"} for r in rows])
    records = scan_runs(tmp_path)
    tall = _cells(render(records, "md", transpose=True))
    labels = [r[0] for r in tall[1:]]
    assert labels == ["runs",
                      "**latent factorisation** (chance 0.1)", "latent_acc[a] ↑",
                      "**cross coherence** (chance 0.1)", "coherence_cross[a->b] ↑", "coherence_cross[b->a] ↑",
                      "**joint coherence** (chance 0.01)", "coherence_joint ↑",
                      "**mixed**", "odd[x] ↑ (chance 0.5)", "odd[y] ↑ (chance 0.25)",
                      "**cost**", "train_s ↑"]
    headings = [r for r in tall[1:] if r[0].startswith("**")]
    assert all(r[1:] == ["", ""] for r in headings)
    values = {r[0].split(" ")[0]: r[1:] for r in tall[1:] if not r[0].startswith("**")}
    assert values["coherence_joint"] == ["**0.400**", "**0.400**"] and values["train_s"] == ["**12.0**", "**12.0**"]
