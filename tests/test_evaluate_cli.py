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
                   "--loglik-items", "3", "--artifacts", "none", "--out", str(out), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    run_dir = out / "digits" / "poe" / "seed-0"
    assert json.loads((run_dir / "run.json").read_text())["artifacts"] == {} and not (run_dir / "artifacts").exists()
    first = _rows(run_dir)
    loglik = {r["metric"]: r for r in first if r["family"] == "loglik"}
    details = dict(loglik["loglik[grey|grey]"]["details"])
    assert details.pop("se") > 0  # the standard error over the items
    assert details == {"samples": 8, "samples_per_expert": 8, "estimator": "iwae", "items": 3}
    assert "synergy[grey|grey,colour]" in loglik and loglik["loglik[grey|grey]"]["unit"] == "nats"
    checkpoint_time = (run_dir / "checkpoint.pt").stat().st_mtime
    info = json.loads((run_dir / "run.json").read_text())
    assert info["spec"]["options"] == {"loglik": {"samples": 8, "items": 3}}
    # as mmbench wrote run.json before plugins declared options: those the run was given are
    # read from their former names among the hyper-parameters
    for key in ("options", "changed_options"):
        del info[key]
    del info["spec"]["options"]
    info["spec"]["hparams"].update(eval_items=None, loglik_samples=8, loglik_items=3)
    info["spec"]["dataset_options"] = {"partners": "1"}
    (run_dir / "run.json").write_text(json.dumps(info))

    proc = run_cli("evaluate", str(run_dir), "--metrics", "loglik", "--artifacts", "pictures", "--loglik-samples", "16",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "checkpoint.pt").stat().st_mtime == checkpoint_time  # nothing trained
    pictures = ("samples_joint", "reconstructions", "traversal_grey", "traversal_colour", "traversal_caption", "kl")
    for name in pictures:
        assert (run_dir / "artifacts" / "pictures" / f"{name}.png").exists(), name
    assert "artifact pictures written again (7 files)" in proc.stdout
    second = _rows(run_dir)
    assert {r["metric"] for r in first} == {r["metric"] for r in second}  # cost rows kept, loglik replaced
    again = {r["metric"]: r for r in second if r["family"] == "loglik"}
    details = dict(again["loglik[grey|grey]"]["details"])
    assert details.pop("se") > 0
    assert details == {"samples": 16, "samples_per_expert": 16, "estimator": "iwae",
                       "items": 3}  # items: the run's, read from its former name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["options"]["loglik"]["samples"] == 16 and info["status"] == "done"
    assert info["artifacts"]["pictures"] == sorted([f"artifacts/pictures/{n}.png" for n in pictures]
                                                   + ["artifacts/pictures/kl.json"])
    assert info["changed_options"]["loglik"] == {"samples": 16, "items": 3}


def test_evaluate_needs_a_run_directory_and_metric_options(tmp_path):
    proc = run_cli("evaluate", str(tmp_path / "nowhere"), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run.json" in proc.stderr
    proc = run_cli("evaluate", str(tmp_path / "nowhere"), "--set", "moe.K=3", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--set moe.K=3: evaluate takes metrics' and artifacts' options only" in proc.stderr
