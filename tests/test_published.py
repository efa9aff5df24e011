"""Published results as data: the loader takes only numbers that name their source, `mmbench
published` lists them, and `mmbench leaderboard --published` puts them beside the runs as marked
rows under the same metric names — or says that a dataset has none."""

from pathlib import Path

import pytest

from mmbench.errors import MMBenchError
from mmbench.leaderboard import render, scan_runs
from mmbench.published import load_file, rows_beside
from mmbench.results import atomic_write_json, write_metrics

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUOTED = Path(__file__).resolve().parent / "published_plugins"

GOOD = '''format = 1
paper = "Someone et al., 2020"

[[record]]
model = "M"
dataset = "toy"
metric = "coherence_joint"
value = 0.25
table = "Table 4"
setting = "K=1"
'''


def _file(tmp_path, text, name="paper.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_well_formed_file_loads_with_the_file_level_paper(tmp_path):
    (record,) = load_file(_file(tmp_path, GOOD))
    assert (record.model, record.dataset, record.metric, record.value) == ("M", "toy", "coherence_joint", 0.25)
    assert (record.paper, record.table, record.setting, record.family) == ("Someone et al., 2020", "Table 4", "K=1",
                                                                           "coherence_joint")


@pytest.mark.parametrize("change, message", [
    (('table = "Table 4"\n', ""), r"record 1 \(M, toy, coherence_joint\) has no table: every published number names its source table"),
    (('paper = "Someone et al., 2020"\n', ""), "has no paper"),
    (('setting = "K=1"\n', 'setting = ""\n'), "has no setting"),
    (("value = 0.25", "value = 86.4"), r"value 86.4 is outside \[0, 1\].*0.864 for 86.4 %"),
    (("value = 0.25", 'value = "0.25"'), "value must be a finite number"),
    (("value = 0.25", "value = 0.25\nspread = 0.01"), "give spread and spread_kind together"),
    (("value = 0.25", "value = 0.25\nsource = 3"), "unknown field"),
    (("format = 1", "format = 2"), "format 2 is not one this mmbench reads"),
    (('metric = "coherence_joint"', 'metric = "coherence joint"'), "not a metric name of mmbench's form"),
])
def test_a_record_without_its_source_or_form_is_rejected_with_one_line(tmp_path, change, message):
    path = _file(tmp_path, GOOD.replace(*change))
    with pytest.raises(MMBenchError, match=message) as caught:
        load_file(path, units={"coherence_joint": "fraction"})
    text = str(caught.value)
    assert "\n" not in text and text.startswith(str(path))


def test_the_same_number_twice_is_refused(tmp_path):
    path = _file(tmp_path, GOOD + GOOD[GOOD.index("[[record]]"):])
    with pytest.raises(MMBenchError, match="record 2 .* the same number as record 1"):
        load_file(path)


def test_the_cli_names_the_file_and_record_without_a_table(tmp_path):
    plugins = tmp_path / "plugins"
    (plugins / "published").mkdir(parents=True)
    (plugins / "bad.py").write_text((QUOTED / "quoted.py").read_text())
    bad = GOOD + GOOD[GOOD.index("[[record]]"):].replace('table = "Table 4"\n', "").replace("0.25", "0.5")
    (plugins / "published" / "someone2020.toml").write_text(bad)
    proc = run_cli("--plugins-dir", str(plugins), "published", env={"MMBENCH_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "someone2020.toml: record 2 (M, toy, coherence_joint) has no table" in line


def _main(capsys, *args) -> str:
    """``mmbench ARGS`` in this process (the subprocess road is tested above): its stdout."""
    from mmbench.cli import main

    assert main(["--plugins-dir", str(QUOTED), *args]) == 0
    return capsys.readouterr().out


def test_published_lists_each_number_with_its_source(capsys):
    out = _main(capsys, "published", "--dataset", "mnist-svhn", "--format", "csv")
    lines = out.strip().splitlines()
    assert lines[0] == "dataset,model,metric,value,spread,spread_kind,paper,table,setting,note"
    # the numbers the mnist-svhn plugin ships, and the test plugin's own file beside them
    assert "mnist-svhn,MMVAE,coherence_cross[mnist->svhn],0.864,,,\"Shi et al., NeurIPS 2019\",Table 2," in out
    assert "mnist-svhn,MMVAE,latent_acc[joint],0.5,0.01,made up: std over 5 runs,\"Made-up et al., 2099\",Table 1," in out
    assert all(line.startswith("mnist-svhn,") for line in lines[1:])
    assert "no published numbers for digits" in _main(capsys, "published", "--dataset", "digits")


# ----------------------------------------------------------------------------- beside the runs
def _runs(tmp_path, dataset, values):
    for seed, (joint, cross) in enumerate(values):
        run = tmp_path / dataset / "moe" / f"seed-{seed}"
        run.mkdir(parents=True)
        atomic_write_json(run / "run.json", {"spec": {"dataset": dataset, "posterior": "moe", "seed": seed}, "status": "done"})
        write_metrics(run / "metrics.jsonl", [
            {"metric": "coherence_joint", "value": joint, "higher_is_better": True, "unit": "fraction"},
            {"metric": "coherence_cross[mnist->svhn]", "value": cross, "higher_is_better": True, "unit": "fraction"}])
    return tmp_path


def _cells(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|:")]


def test_published_numbers_sit_beside_the_runs_under_the_same_metric_names(tmp_path, capsys):
    out = _runs(tmp_path / "runs", "mnist-svhn", [(0.30, 0.80), (0.40, 0.90)])
    text = _main(capsys, "leaderboard", str(out), "--published")
    header, mine, *papers = _cells(text)
    assert header == ["dataset", "posterior", "runs", "coherence_joint ↑", "coherence_cross[mnist->svhn] ↑"]
    assert mine[1:3] == ["moe", "2/2"] and mine[3] == "0.350 ± 0.071"
    # the papers' rows: marked, their numbers in the runs' columns, never the bold best
    assert ["mnist-svhn", "MMVAE · Shi et al., NeurIPS 2019, Table 2", "published", "0.421", "0.864"] in papers
    assert ["mnist-svhn", "MVAE · Shi et al., NeurIPS 2019, Table 2", "published", "0.127", "0.0950"] in papers
    assert all(row[2] == "published" and "**" not in "".join(row) for row in papers)
    assert "- published: MMVAE, Shi et al., NeurIPS 2019, Table 2: D=20, K=30, 30 epochs" in text
    assert "latent_acc" not in text  # its metric is not one these runs report
    assert "Shi et al." not in _main(capsys, "leaderboard", str(out))  # only when asked


def test_a_dataset_without_published_numbers_says_so(tmp_path):
    proc = run_cli("leaderboard", str(ROOT / "results" / "digits" / "runs"), "--published",
                   env={"MMBENCH_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "- no published numbers for digits" in proc.stdout and "published |" not in proc.stdout


def test_published_rows_carry_spread_into_the_long_csv(tmp_path):
    from mmbench.published import PublishedRecord

    out = _runs(tmp_path, "mnist-svhn", [(0.30, 0.80)])
    record = PublishedRecord("MMVAE", "mnist-svhn", "coherence_joint", 0.421, "P", "Table 2", "s",
                             spread=0.02, spread_kind="std over 3 runs")
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(render(scan_runs(out), "csv", published=[record]))))
    (paper,) = [r for r in rows if r["posterior"] == "MMVAE · P, Table 2"]
    assert (paper["metric"], paper["mean"], paper["std"], paper["status"]) == ("coherence_joint", "0.421", "0.02",
                                                                                "1 published")
    md = render(scan_runs(out), "md", published=[record])
    assert "0.421 ± 0.020" in md and "(± is std over 3 runs)" in md


def test_rows_beside_keeps_each_datasets_numbers_after_its_runs():
    from mmbench.published import PublishedRecord

    rows = [{"dataset": d, "posterior": "moe", "counts": {"done": 1}, "total": 1, "stats": {"m": (0.5, 0.0, 1)}}
            for d in ("a", "b")]
    records = [PublishedRecord("X", "a", "m", 0.7, "P", "T1", "s"), PublishedRecord("Y", "b", "other", 0.1, "P", "T2", "s")]
    out, notes = rows_beside(rows, {"m": ("fraction", True)}, records)
    assert [(r["dataset"], r.get("published", False)) for r in out] == [("a", False), ("a", True), ("b", False)]
    assert notes[1] == "published numbers for b (other) name no metric these runs report"


def test_the_best_of_each_dataset_stays_bold_with_papers_rows_between(tmp_path):
    from mmbench.published import PublishedRecord

    for dataset in ("a-set", "b-set"):
        for posterior, value in (("moe", 0.6), ("poe", 0.4)):
            run = tmp_path / dataset / posterior / "seed-0"
            run.mkdir(parents=True)
            atomic_write_json(run / "run.json", {"spec": {"dataset": dataset, "posterior": posterior, "seed": 0},
                                                 "status": "done"})
            write_metrics(run / "metrics.jsonl", [{"metric": "coherence_joint", "value": value, "unit": "fraction"}])
    paper = PublishedRecord("Z", "a-set", "coherence_joint", 0.9, "P", "T", "s")
    rows = {(r[0], r[1]): r[3] for r in _cells(render(scan_runs(tmp_path), "md", published=[paper]))[1:]}
    assert rows == {("a-set", "moe"): "**0.600**", ("a-set", "poe"): "0.400", ("a-set", "Z · P, T"): "0.900",
                    ("b-set", "moe"): "**0.600**", ("b-set", "poe"): "0.400"}
