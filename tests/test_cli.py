"""The command line in a real subprocess, as a user runs it."""

import json
import textwrap
from pathlib import Path

from conftest import run_cli


def test_misspelt_posterior_is_one_line_with_a_suggestion(tmp_path):
    proc = run_cli("run", "--posteriors", "moee", "--out", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "did you mean 'moe'" in lines[0] and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing started


def test_bad_flag_values_are_rejected_before_any_work(tmp_path):
    proc = run_cli("run", "--epochs", "zero", "--out", str(tmp_path))
    assert proc.returncode == 2 and "positive integer" in proc.stderr and "Traceback" not in proc.stderr
    # no CUDA here: "not available"; CUDA with fewer than 100 devices: "has N CUDA device(s)"
    proc = run_cli("run", "--device", "cuda:99", "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "CUDA is not available" in proc.stderr or "CUDA device(s)" in proc.stderr, proc.stderr


def _external_plugin(root):
    """A plugin distribution outside the repo, declared only by its entry point (a dist-info)."""
    (root / "mmbench_hello.py").write_text(textwrap.dedent("""
        from mmbench import hookimpl
        from mmbench.api import Metric, MetricValue

        class Hello(Metric):
            name = "hello"
            criterion = "smoke"
            unit = "count"
            description = "counts the modalities"

            def evaluate(self, ctx):
                yield MetricValue("hello", float(len(ctx.names)))

        @hookimpl
        def register_metrics(register):
            register(Hello())
    """))
    info = root / "mmbench_hello-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmbench-hello\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[mmbench]\nhello = mmbench_hello\n")
    return {"PYTHONPATH": str(root)}


def test_external_plugin_appears_in_plugins(tmp_path):
    env = _external_plugin(tmp_path)
    proc = run_cli("plugins", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "hello  (mmbench-hello 0.3)" in proc.stdout
    assert "metric    hello" in proc.stdout
    # ... and the filter can leave it out
    proc = run_cli("plugins", env={**env, "MMBENCH_LOAD_PLUGINS": "moe,poe,digits,metrics"})
    assert "mmbench-hello" not in proc.stdout and "moe  (mmbench" in proc.stdout


def test_a_small_run_end_to_end_then_resumes_nothing(tmp_path, mmbench_home):
    env = {"MMBENCH_HOME": str(mmbench_home), **_external_plugin(tmp_path)}
    out = tmp_path / "runs"
    args = ["run", "--posteriors", "moe,poe", "--epochs", "1", "--data-option", "partners=1",
            "--data-option", "renderings=1",  # the judges train on a tenth of the colour pool
            "--metrics", "coherence_cross,coherence_joint,hello", "--out", str(out), "--quiet"]
    proc = run_cli(*args, env={**env, "COLUMNS": "4000"})  # a terminal that fits the wide table
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "| moe " in table and "| poe " in table and "coherence_cross[grey->colour]" in table
    assert "hello" in table
    wide = [line for line in table.splitlines() if line.startswith("|")]
    assert wide[0].startswith("| dataset") and len(wide) == 4  # header, rule, a row per posterior
    for posterior in ("moe", "poe"):
        run_dir = out / "digits" / posterior / "seed-0"
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "done" and info["spec"]["hparams"]["epochs"] == 1
        assert info["provenance"]["torch"] and info["provenance"]["dataset_plugin"]["distribution"] == "mmbench"
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        names = {r["metric"] for r in rows}
        assert {"coherence_joint", "coherence_cross[colour->caption]", "decoder_passes", "hello"} <= names
        assert all(0 <= r["value"] <= 1 for r in rows if r["metric"].startswith("coherence"))
        assert (run_dir / "checkpoint.pt").exists()
    passes = {p: [json.loads(line) for line in (out / "digits" / p / "seed-0" / "metrics.jsonl").read_text().splitlines()]
              for p in ("moe", "poe")}
    # counted, not assumed: M² = 9 for moe over 3 modalities; 2M = 6 for poe
    assert [r["value"] for r in passes["moe"] if r["metric"] == "decoder_passes"] == [9.0]
    assert [r["value"] for r in passes["poe"] if r["metric"] == "decoder_passes"] == [6.0]

    # A finished run is never redone: the second call trains nothing and prints the same cells,
    # in a narrow terminal as the tall table (a row per metric under its criterion, with chance).
    before = (out / "digits" / "moe" / "seed-0" / "run.json").stat().st_mtime_ns
    again = run_cli(*args, env={**env, "COLUMNS": "80"})
    assert again.returncode == 0 and "epoch 1/1" not in again.stderr
    tall = [[c.strip() for c in line.strip("|").split("|")] for line in again.stdout.splitlines()
            if line.startswith("|") and not line.startswith("|:")]
    assert tall[0][0] == "digits: metric" and tall[0][1:] == ["moe", "poe"]
    labels = [row[0] for row in tall]
    assert "**cross coherence** (chance 0.1)" in labels and "**joint coherence** (chance 0.01)" in labels
    assert labels.index("**cross coherence** (chance 0.1)") < labels.index("coherence_cross[grey->colour] ↑")
    cells = {row[0].split(" ")[0]: row[1:] for row in tall}
    header = [c.strip() for c in wide[0].strip("|").split("|")]
    for posterior, line in zip(("moe", "poe"), wide[2:]):
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        assert row["coherence_joint ↑"] == cells["coherence_joint"][("moe", "poe").index(posterior)]
    assert (out / "digits" / "moe" / "seed-0" / "run.json").stat().st_mtime_ns == before

    # Other settings into the same directory are refused, not mixed in.
    clash = run_cli(*[a if a != "1" else "2" for a in args], env=env)
    assert clash.returncode == 2 and "other settings" in clash.stderr and "Traceback" not in clash.stderr

    board = run_cli("leaderboard", str(out), env=env)
    assert board.returncode == 0 and "| moe " in board.stdout


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmbench: error: "), proc.stderr
    return lines[0]


def test_bad_input_is_one_line_and_creates_nothing(tmp_path):
    out = tmp_path / "runs"
    env = {"MMBENCH_HOME": str(tmp_path / "home")}
    line = _one_line_error(run_cli("run", "--out", "/proc/mmbench-test", env=env))
    assert "--out /proc/mmbench-test cannot be written" in line
    assert not Path("/proc/mmbench-test").exists()
    line = _one_line_error(run_cli("run", "--estimator", "foo", "--out", str(out), env=env))
    assert "posterior 'moe' has no estimator 'foo'; it offers dreg, iwae" in line
    line = _one_line_error(run_cli("run", "--set", "loglik.sample=5000", "--out", str(out), env=env))
    assert "--set loglik.sample=5000: 'loglik' has no option 'sample'; did you mean 'samples'?" in line
    line = _one_line_error(run_cli("run", "--set", "lglik.samples=5000", "--out", str(out), env=env))
    assert "nothing registered is called 'lglik'; did you mean 'loglik'?" in line
    line = _one_line_error(run_cli("run", "--set", "loglik.samples=many", "--out", str(out), env=env))
    assert "loglik.samples takes a positive integer (got 'many')" in line
    line = _one_line_error(run_cli("run", "--loglik-items", "0", "--out", str(out), env=env))  # a former flag
    assert "--loglik-items: loglik.items takes a positive integer (got '0')" in line
    grid = tmp_path / "grid.toml"
    grid.write_text("[loglik]\nsamples = 0.5\n")
    line = _one_line_error(run_cli("run", "--config", str(grid), "--out", str(out), env=env))
    assert f"{grid} [loglik]: loglik.samples takes a positive integer (got 0.5)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]  # no run directory, lock or cache
