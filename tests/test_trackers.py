"""Experiment trackers on real runs (tests/grid_plugins' tiny-digits, three epochs in about a
second): TensorBoard's event files and MLflow's store, read back with their own readers, hold
what run.json holds; a tracker that raises, wherever it raises, leaves the run done with the
error recorded; a tracker that does not exist or cannot run here stops the grid before anything
is made."""

import json
from pathlib import Path

import pytest
import torch

from conftest import run_with_grid_plugins as mmbench

PLUGINS = str(Path(__file__).parent / "grid_plugins")  # tiny-digits, test_bound, recording, raising, absent
RUN = ["run", "--dataset", "tiny-digits", "--posteriors", "poe", "--epochs", "3", "--metrics", "test_bound", "--quiet"]
PICTURES = {"samples_joint.png", "reconstructions.png", "traversal_plain.png", "traversal_inverted.png", "kl.png",
            "kl.json"}


@pytest.fixture(scope="module", autouse=True)
def one_thread(mmbench_home):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMBENCH_HOME", str(mmbench_home))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One run followed by TensorBoard, MLflow and the recording test tracker: (run dir, run.json)."""
    out = tmp_path_factory.mktemp("tracked") / "runs"
    rc, _, stderr = mmbench(*RUN, "--tracker", "tensorboard,mlflow,recording", "--out", str(out))
    assert rc == 0, stderr
    assert "warning" not in stderr, stderr
    run_dir = out / "tiny-digits" / "poe" / "seed-0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["trackers"] == ["tensorboard", "mlflow", "recording"]
    assert info["tracker_errors"] == {}
    assert {Path(p).name for p in info["artifacts"]["pictures"]} == PICTURES
    return run_dir, info


def _metrics(run_dir) -> dict:
    return {json.loads(line)["metric"]: json.loads(line)["value"] for line in (run_dir / "metrics.jsonl").open()}


def test_tensorboard_event_files_hold_the_per_epoch_bounds_of_run_json(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, info = tracked
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    bounds = events.Scalars("train/bound")
    assert [e.step for e in bounds] == [h["epoch"] for h in info["history"]] == [1, 2, 3]
    # event files keep float32
    assert [e.value for e in bounds] == pytest.approx([h["bound"] for h in info["history"]], rel=1e-6)
    assert [e.value for e in events.Scalars("train/step_ms")] == pytest.approx([h["step_ms"] for h in info["history"]],
                                                                               rel=1e-6)
    for name, value in _metrics(run_dir).items():
        (logged,) = events.Scalars(f"metrics/{name}")
        assert logged.step == 3 and logged.value == pytest.approx(value, rel=1e-6)
    images = set(events.Tags()["images"])
    assert images == {f"artifacts/artifacts/pictures/{n}" for n in PICTURES if n.endswith(".png")}
    (kl,) = events.Images("artifacts/artifacts/pictures/kl.png")
    assert kl.width > 100 and kl.height > 100
    assert {"run", "status"} <= {t.split("/")[0] for t in events.Tags()["tensors"]}


def test_mlflow_store_holds_the_per_epoch_bounds_of_run_json(tracked):
    from mlflow.tracking import MlflowClient

    run_dir, info = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mmbench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny-digits/poe/seed-0" and run.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run.info.run_id, "train/bound"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(h["epoch"], h["bound"]) for h in info["history"]]
    assert run.data.metrics["metrics/test_bound"] == _metrics(run_dir)["test_bound"]
    assert {k: v for k, v in run.data.params.items()} == {f"hparams.{k}": str(v)
                                                          for k, v in info["resolved_hparams"].items()}
    assert run.data.tags["mmbench.posterior"] == "poe" and run.data.tags["mmbench.seed"] == "0"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "artifacts/pictures")}
    assert logged == {f"artifacts/pictures/{n}" for n in PICTURES}
    rows = json.loads(Path(client.download_artifacts(run.info.run_id, "metrics.json", str(run_dir.parent))).read_text())
    assert {r["metric"]: r["value"] for r in rows} == _metrics(run_dir)


def test_mlflow_names_metric_values_as_it_allows():
    from mmbench_mlflow import mlflow_name

    assert mlflow_name("coherence_cross[grey->colour]") == "coherence_cross/grey to colour"
    assert mlflow_name("loglik[grey|grey,colour]") == "loglik/grey given grey and colour"
    assert mlflow_name("coherence_cond[k=2,->m3]") == "coherence_cond/k 2 and to m3"
    assert mlflow_name("train_s") == "train_s"


def test_trackers_receive_every_call_in_order(tracked):
    run_dir, info = tracked
    calls = [json.loads(line) for line in (run_dir / "recorded.jsonl").open()]
    assert [c[0] for c in calls] == ["start"] + ["log_epoch"] * 3 + ["log_metrics"] + ["log_artifact"] * 6 + ["finish"]
    assert calls[0][1] == "tiny-digits/poe/seed-0"
    assert {"run_dir", "spec", "resolved_hparams", "options", "provenance", "data"} <= set(calls[0][2])
    assert [c[2] for c in calls[1:4]] == [{k: v for k, v in h.items() if k != "epoch"} for h in info["history"]]
    assert calls[4][1] == list(_metrics(run_dir))
    assert sorted(Path(c[1]).relative_to(run_dir).as_posix() for c in calls[5:11]) == info["artifacts"]["pictures"]
    assert calls[-1] == ["finish", "done"]


@pytest.mark.parametrize("at", ["start", "log_epoch", "log_metrics", "log_artifact", "finish"])
def test_a_tracker_that_raises_leaves_the_run_done_with_the_error_recorded(tmp_path, at):
    out = tmp_path / "runs"
    rc, stdout, stderr = mmbench(*RUN, "--tracker", "raising,recording", "--set", f"raising.at={at}",
                                 "--epochs", "2", "--out", str(out))
    assert rc == 0, stderr
    run_dir = out / "tiny-digits" / "poe" / "seed-0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and "test_bound" in _metrics(run_dir)
    assert info["tracker_errors"] == {"raising": f"{at} raised RuntimeError: the tracker's store went away in {at}"}
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "tracker 'raising'" in warnings[0] and "the run goes on" in warnings[0]
    # the other tracker saw the whole run
    calls = [json.loads(line)[0] for line in (run_dir / "recorded.jsonl").open()]
    assert calls[0] == "start" and calls[-1] == "finish" and calls.count("log_epoch") == 2


def test_a_resumed_run_logs_its_earlier_epochs_again(tmp_path):
    """Killed after its first epochs, then run again: the new session holds every epoch."""
    out = tmp_path / "runs"
    assert mmbench(*RUN, "--epochs", "2", "--out", str(out))[0] == 0
    run_dir = out / "tiny-digits" / "poe" / "seed-0"
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"  # as a run killed after its second epoch's checkpoint leaves it
    (run_dir / "run.json").write_text(json.dumps(info))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["config"]["epochs"] = 3  # the checkpoint of a three-epoch run, two epochs in
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    info["spec"]["hparams"]["epochs"] = 3
    (run_dir / "run.json").write_text(json.dumps(info))
    rc, _, stderr = mmbench(*RUN, "--tracker", "recording", "--out", str(out))
    assert rc == 0 and "resuming" in stderr, stderr
    calls = [json.loads(line) for line in (run_dir / "recorded.jsonl").open()]
    assert [c[1] for c in calls if c[0] == "log_epoch"] == [1, 2, 3]
    assert [c[2]["bound"] for c in calls if c[0] == "log_epoch"][:2] == [h["bound"] for h in info["history"]]


@pytest.mark.parametrize("given,expected", [
    (["--tracker", "tensorbord"], "unknown tracker 'tensorbord'; did you mean 'tensorboard'?"),
    (["--trackers", "recording,mlfow"], "unknown tracker 'mlfow'; did you mean 'mlflow'?"),
    (["--tracker", "absent"], "tracker 'absent' cannot run here: the absent-tracker package is not installed"),
    (["--tracker", "raising", "--set", "raising.at=end"], "raising.at must be one of start, log_epoch"),
])
def test_a_tracker_that_is_unknown_or_cannot_run_is_one_line_and_nothing_is_made(tmp_path, given, expected):
    out = tmp_path / "runs"
    rc, stdout, stderr = mmbench(*RUN, *given, "--out", str(out))
    assert rc == 2 and stderr.strip().count("\n") == 0 and expected in stderr, stderr
    assert not out.exists()


def test_trackers_in_a_grid_file(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('dataset = "tiny-digits"\nposteriors = ["poe"]\ntrackers = ["recording"]\n\n[raising]\nat = "start"\n')
    rc, stdout, stderr = mmbench("run", "--config", str(grid), "--out", str(tmp_path / "runs"), "--dry-run")
    assert rc == 0, stderr
    assert stdout.strip().endswith("trackers=recording")
    grid.write_text('dataset = "tiny-digits"\ntracker = ["mlfow"]\n')
    rc, _, stderr = mmbench("run", "--config", str(grid), "--out", str(tmp_path / "runs"))
    assert rc == 2 and "did you mean 'mlflow'?" in stderr and not (tmp_path / "runs").exists()


def test_plugins_lists_trackers_and_artifacts_as_kinds():
    rc, stdout, _ = mmbench("plugins")
    assert rc == 0
    assert "tracker   tensorboard" in stdout and "tracker   mlflow" in stdout and "option mlflow.uri" in stdout
    assert "artifact  pictures" in stdout and "metric    pictures" not in stdout
    assert "not available here: the absent-tracker package is not installed" in stdout
