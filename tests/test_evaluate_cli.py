"""``mmbench evaluate RUN_DIR`` in a real subprocess: a finished run evaluated again from its
checkpoint, without training; rows of other metric families kept; bad input is one line."""

import json

from conftest import run_cli


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_evaluate_a_finished_run_again(tmp_path, mmbench_home):
    # one thread: tiny models gain nothing from a second one, whose spin-waiting a busy machine pays for
    env = {"MMBENCH_HOME": str(mmbench_home), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "runs"
    proc = run_cli("run", "--posteriors", "poe", "--epochs", "1", "--batch-size", "1024", "--latent-dim", "4",
                   "--data-option", "partners=1", "--metrics", "loglik", "--loglik-samples", "8",
                   "--loglik-items", "3", "--out", str(out), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    run_dir = out / "digits" / "poe" / "seed-0"
    first = _rows(run_dir)
    loglik = {r["metric"]: r for r in first if r["family"] == "loglik"}
    assert loglik["loglik[grey|grey]"]["details"] == {"samples": 8, "samples_per_expert": 8, "estimator": "iwae", "items": 3}
    assert "synergy[grey|grey,colour]" in loglik and loglik["loglik[grey|grey]"]["unit"] == "nats"
    checkpoint_time = (run_dir / "checkpoint.pt").stat().st_mtime

    proc = run_cli("evaluate", str(run_dir), "--metrics", "pictures,loglik", "--loglik-samples", "16", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "checkpoint.pt").stat().st_mtime == checkpoint_time  # nothing trained
    for name in ("samples_joint", "reconstructions", "traversal_grey", "traversal_colour", "traversal_caption", "kl"):
        assert (run_dir / f"{name}.png").exists(), name
    second = _rows(run_dir)
    assert {r["metric"] for r in first} == {r["metric"] for r in second}  # cost rows kept, loglik replaced
    again = {r["metric"]: r for r in second if r["family"] == "loglik"}
    assert again["loglik[grey|grey]"]["details"]["samples"] == 16
    info = json.loads((run_dir / "run.json").read_text())
    assert info["eval_options"]["loglik_samples"] == 16 and info["status"] == "done"


def test_evaluate_needs_a_run_directory(tmp_path):
    proc = run_cli("evaluate", str(tmp_path / "nowhere"), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run.json" in proc.stderr
