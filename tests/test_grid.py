"""Grids that survive faults: a SIGKILL mid-run, corrupt files, a diverging run, two runners
on one results directory, a malformed grid file, and the Ray executor. Each grid is the real
CLI (in a subprocess where a process must die or two must race) on tests/grid_plugins'
tiny-digits — real 8×8 digits, small MLPs, ten epochs in about a second — so that the
grid machinery, not the training, is what these tests spend their time on."""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


from conftest import run_with_grid_plugins as mmbench

PLUGINS = str(Path(__file__).parent / "grid_plugins")  # tiny-digits, test_bound, diverging
GRID = ["--dataset", "tiny-digits", "--posteriors", "moe,poe", "--seeds", "0", "--epochs", "10",
        "--metrics", "test_bound", "--quiet"]
TIMINGS = {"train_s", "step_ms"}  # wall times differ between any two runs; everything else must not


@pytest.fixture(scope="module", autouse=True)
def one_thread(mmbench_home):
    """One torch thread, here and in the subprocesses: the same arithmetic everywhere, and no
    thread spinning on a busy two-core machine. MMBENCH_HOME: the session's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MMBENCH_HOME", str(mmbench_home))
        mp.setenv("COLUMNS", "4000")  # the run's own table wide, a row per posterior, as these tests read it
        yield
    torch.set_num_threads(threads)


def _board(out) -> list[dict]:
    """The csv leaderboard of ``out`` without wall times, as rows."""
    from mmbench.leaderboard import render, scan_runs

    return [r for r in csv.DictReader(io.StringIO(render(scan_runs(out), "csv"))) if r["metric"] not in TIMINGS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted grid: the numbers every faulty grid below must end up with."""
    out = tmp_path_factory.mktemp("reference") / "runs"
    rc, stdout, stderr = mmbench("run", *GRID, "--out", str(out))
    assert rc == 0, stderr
    board = _board(out)
    assert [(r["posterior"], r["metric"]) for r in board] == [
        ("moe", "test_bound"), ("moe", "decoder_passes"), ("poe", "test_bound"), ("poe", "decoder_passes")]
    return out, board


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_numbers(tmp_path, reference):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "mmbench.cli", "--plugins-dir", PLUGINS, "run", *GRID, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "tiny-digits" / "moe" / "seed-0" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # after the first of ten epochs of the first cell
    proc.wait()
    info = json.loads((checkpoint.parent / "run.json").read_text())
    assert info["status"] == "running"  # killed mid-run, not after it
    epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= epoch < 10

    rc, _, stderr = mmbench("run", *GRID, "--out", str(out))
    assert rc == 0, stderr
    assert f"resuming {checkpoint.parent} from epoch {epoch} of 10" in stderr
    assert "ended without finishing it; taking it over" in stderr  # the dead runner's lock
    assert _board(out) == reference[1]
    history = json.loads((checkpoint.parent / "run.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 11))


def test_workers_end_with_a_killed_runner(tmp_path):
    """SIGKILL the runner of a two-worker grid: its worker processes end too (they would
    otherwise train on, orphaned, beside whichever runner comes next)."""
    out = tmp_path / "runs"
    grid = [a if a != "10" else "100000" for a in GRID]  # cells that run until killed
    cmd = [sys.executable, "-m", "mmbench.cli", "--plugins-dir", PLUGINS, "run", *grid, "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "tiny-digits" / "moe" / "seed-0" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2 and proc.poll() is None  # the pool's two (and its resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and "multiprocessing.spawn" in (stat.parent / "cmdline").read_text():
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_corrupt_checkpoint_and_truncated_metrics_are_named_and_redone(tmp_path, reference):
    out = tmp_path / "runs"
    shutil.copytree(reference[0], out)
    moe, poe = out / "tiny-digits" / "moe" / "seed-0", out / "tiny-digits" / "poe" / "seed-0"
    # moe: interrupted, and its checkpoint is garbage
    info = json.loads((moe / "run.json").read_text())
    (moe / "run.json").write_text(json.dumps({**info, "status": "running"}))
    (moe / "metrics.jsonl").unlink()
    (moe / "checkpoint.pt").write_bytes(b"\x80\x04 not a checkpoint")
    # poe: finished, but its metrics file was cut mid-line
    text = (poe / "metrics.jsonl").read_text()
    (poe / "metrics.jsonl").write_text(text[: len(text) // 2])

    rc, _, stderr = mmbench("run", *GRID, "--out", str(out))
    assert rc == 0, stderr
    assert f"{moe / 'checkpoint.pt'} is not a readable checkpoint" in stderr
    assert f"{poe / 'metrics.jsonl'} is truncated or malformed" in stderr
    assert "Traceback" not in stderr
    # nothing lost: the bad files are kept for a person; the runs were redone to the same numbers
    assert (moe / "checkpoint.pt.corrupt").read_bytes() == b"\x80\x04 not a checkpoint"
    assert (poe / "metrics.jsonl.corrupt").read_text() == text[: len(text) // 2]
    assert _board(out) == reference[1]
    assert "resuming" in stderr and f"resuming {moe}" not in stderr  # poe re-evaluated, moe from scratch


def test_a_file_cut_at_a_line_end_or_foreign_is_caught(tmp_path, reference):
    from mmbench.integrity import resumable_checkpoint, run_dir_problem
    from mmbench.leaderboard import scan_runs
    from mmbench.train import TrainConfig

    out = tmp_path / "runs"
    shutil.copytree(reference[0], out)
    run = out / "tiny-digits" / "poe" / "seed-0"
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:-1]))  # parses, but is not what was written
    path, why = run_dir_problem(run)
    assert path.name == "metrics.jsonl" and "checksum" in why
    (out / "tiny-digits" / "moe" / "seed-0" / "run.json").write_text('{"spec": ')
    statuses = {r.info["spec"]["posterior"]: (r.status, r.info.get("reason", "")) for r in scan_runs(out)}
    assert statuses["poe"][0] == "corrupt" and "metrics.jsonl" in statuses["poe"][1]
    assert statuses["moe"] == ("corrupt", "run.json is not valid JSON")

    cfg = TrainConfig(epochs=2, K=1, batch_size=8, lr=1e-3, estimator="dreg", seed=0)
    model = torch.nn.Linear(2, 2)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert resumable_checkpoint(foreign, cfg, model) is None and (tmp_path / "foreign.pt.corrupt").exists()
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": TrainConfig}, pickled)  # a class: weights_only refuses to load it
    assert resumable_checkpoint(pickled, cfg, model) is None and (tmp_path / "pickled.pt.corrupt").exists()


def test_a_diverging_run_is_failed_and_the_grid_goes_on(tmp_path, reference):
    out = tmp_path / "runs"
    shutil.copytree(reference[0] / "tiny-digits" / "moe", out / "tiny-digits" / "moe")
    grid = [a if a != "moe,poe" else "diverging,moe" for a in GRID]
    rc, stdout, stderr = mmbench("run", *grid, "--out", str(out))
    assert rc == 1, stderr  # one cell failed; the other still reported
    assert "diverged: loss not finite at epoch 2" in stderr and "Traceback" not in stderr
    info = json.loads((out / "tiny-digits" / "diverging" / "seed-0" / "run.json").read_text())
    assert info["status"] == "failed" and info["last_finite_epoch"] == 1
    assert "| diverging" in stdout and "| moe" in stdout  # the run's own table

    rc, board, _ = mmbench("leaderboard", str(out))
    row = next(line for line in board.splitlines() if "| diverging" in line)
    assert "0/1 (1 failed)" in row and row.split("|")[4].strip() == "failed"
    assert "tiny-digits/diverging/seed-0: failed: diverged" in board and "(last finite epoch 1)" in board
    rc, text, _ = mmbench("leaderboard", str(out), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {"posterior": "diverging", "n": "0", "status": "1 failed"}.items() <= rows[0].items()
    assert [r for r in rows if r["posterior"] == "moe" and r["metric"] not in TIMINGS] == \
        [r | {"status": "done"} for r in reference[1] if r["posterior"] == "moe"]


def test_two_runners_on_one_results_directory_share_the_grid(tmp_path, reference):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "mmbench.cli", "--plugins-dir", PLUGINS, "run",
           *[a for a in GRID if a != "--quiet"], "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    stderr = "".join(err for _, err in results)
    assert stderr.count("epoch 1/10") == 2 and stderr.count("epoch 10/10") == 2  # each cell trained once
    for stdout, _ in results:  # both end with the whole grid's table
        assert "| moe " in stdout and "| poe " in stdout
    assert _board(out) == reference[1]
    for posterior in ("moe", "poe"):
        assert (out / "tiny-digits" / posterior / "seed-0" / ".lock").read_text() == ""  # released


def test_cpu_workers_split_the_cores_and_give_the_same_numbers(tmp_path, reference, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")  # unset: the workers choose their own thread counts
    out = tmp_path / "runs"
    rc, _, stderr = mmbench("run", *GRID, "--device", "cpu", "--workers", "2", "--out", str(out))
    assert rc == 0, stderr
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"2 workers on cpu, cpu, {threads} CPU thread(s) each" in stderr
    for posterior in ("moe", "poe"):
        info = json.loads((out / "tiny-digits" / posterior / "seed-0" / "run.json").read_text())
        assert info["status"] == "done" and info["provenance"]["torch_threads"] == threads
    board = _board(out)
    assert [(r["posterior"], r["metric"]) for r in board] == [(r["posterior"], r["metric"]) for r in reference[1]]
    for got, want in zip(board, reference[1]):  # other thread counts may reorder float sums
        assert float(got["mean"]) == pytest.approx(float(want["mean"]), rel=1e-4, abs=1e-6)


def test_run_lock_reports_its_holder_and_takes_over_a_stale_one(tmp_path):
    from mmbench.locks import RunLock

    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire(wait=False)
    assert not second.acquire(wait=False) and second.holder.pid == os.getpid()
    first.release()
    assert second.acquire(wait=False) and second.stale is None
    second.release()
    (tmp_path / ".lock").write_text('{"pid": 999999, "host": "elsewhere", "since": "yesterday"}')
    third = RunLock(tmp_path)
    assert third.acquire(wait=False) and third.stale.pid == 999999
    third.release()


def test_grid_file_flags_override_and_malformed_toml_is_one_line(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('dataset = "tiny-digits"\nposteriors = ["moe", "poe"]\nseeds = [0, 1]\nepochs = 3\n'
                    '[data_options]\n')
    rc, stdout, stderr = mmbench("run", "--config", str(grid), "--seeds", "5", "--posteriors", "poe",
                                 "--out", str(tmp_path / "o"), "--dry-run")
    assert rc == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and "[tiny-digits / poe / seed 5]" in lines[0] and "'epochs': 3" in lines[0]

    grid.write_text('posteriors = ["moe", "poe"]\nseeds = [0, 1\nepochs = 3\n')
    rc, _, stderr = mmbench("run", "--config", str(grid), "--out", str(tmp_path / "o"))
    assert rc == 2 and "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(grid) in lines[0] and "line 3" in lines[0] and "invalid TOML" in lines[0]
    grid.write_text("epoch = 3\n")
    rc, _, stderr = mmbench("run", "--config", str(grid))
    assert rc == 2 and "unknown setting 'epoch'; did you mean 'epochs'?" in stderr
    grid.write_text('seeds = [0, "one"]\n')
    rc, _, stderr = mmbench("run", "--config", str(grid))
    assert rc == 2 and f"{grid}: seeds takes a list of integers (got 'one')" in stderr
    grid.write_text('dataset = "tiny-digits"\n[test_bound]\nitems = 3\n')
    rc, _, stderr = mmbench("run", "--config", str(grid))
    assert rc == 2 and f"{grid} [test_bound]: 'test_bound' has no option 'items'; it has pairs" in stderr
    assert not (tmp_path / "o").exists()


def test_a_two_cell_grid_on_a_local_ray_cluster(tmp_path, reference):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mmbench[ray]')")
    out = tmp_path / "runs"
    rc, stdout, stderr = mmbench("run", *GRID, "--out", str(out), "--executor", "ray")
    assert rc == 0, stderr
    assert "2 cells submitted to Ray (1 CPU, 0 GPU each)" in stderr
    assert "| moe " in stdout and "| poe " in stdout
    for posterior in ("moe", "poe"):
        info = json.loads((out / "tiny-digits" / posterior / "seed-0" / "run.json").read_text())
        assert info["status"] == "done" and info["provenance"]["torch_threads"] == 1
    assert _board(out) == reference[1]  # one thread per task: the very same numbers


def test_options_reach_the_run_its_record_and_the_provenance(tmp_path):
    out = tmp_path / "runs"
    grid = ["--dataset", "tiny-digits", "--posteriors", "poe", "--epochs", "2", "--metrics", "test_bound", "--quiet"]
    file = tmp_path / "grid.toml"
    file.write_text('[test_bound]\npairs = 100\n')
    cells = []
    for given in (["--set", "test_bound.pairs=100"], ["--test-pairs", "100"], ["--config", str(file)]):
        rc, stdout, stderr = mmbench("run", *grid, *given, "--out", str(out), "--dry-run")
        assert rc == 0, stderr
        cells.append(stdout)
    assert cells[0] == cells[1] == cells[2] and "options={'test_bound': {'pairs': 100}}" in cells[0]
    # the default given explicitly is the same run as nothing given
    assert mmbench("run", *grid, "--set", "test_bound.pairs=256", "--out", str(out), "--dry-run")[1] == \
        mmbench("run", *grid, "--out", str(out), "--dry-run")[1]

    rc, _, stderr = mmbench("run", *grid, "--set", "test_bound.pairs=100", "--out", str(out))
    assert rc == 0, stderr
    run = out / "tiny-digits" / "poe" / "seed-0"
    info = json.loads((run / "run.json").read_text())
    assert info["spec"]["options"] == {"test_bound": {"pairs": 100}}
    assert info["options"]["test_bound"] == {"pairs": 100} and info["options"]["tiny-digits"] == {}
    assert info["changed_options"] == {"test_bound": {"pairs": 100}}
    # the metric read the value it was configured with
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["metric"] == "test_bound"]
    assert row["details"] == {"pairs": 100}
    rc, board, _ = mmbench("leaderboard", str(out), "--provenance")
    assert "Options set: test_bound.pairs=100 (all runs)." in board
    rc, _, stderr = mmbench("run", *grid, "--set", "tiny-digits.partners=1", "--out", str(out))
    assert rc == 2 and "--set tiny-digits.partners=1: 'tiny-digits' has no option 'partners'; it declares none" in stderr
    # another value into the same directory is refused
    rc, _, stderr = mmbench("run", *grid, "--set", "test_bound.pairs=101", "--out", str(out))
    assert rc == 2 and "other settings (test_bound {'pairs': 100} vs {'pairs': 101})" in stderr


def _as_before_options(run_dir, **hparams):
    """run.json as mmbench wrote it before plugins declared options: their former names among the
    hyper-parameters (None: not given), dataset options as given (text), no `options`."""
    info = json.loads((run_dir / "run.json").read_text())
    spec = info["spec"]
    spec.pop("options")
    spec["hparams"].update({"eval_items": None, "loglik_samples": None, "loglik_items": None, **hparams})
    for key in ("options", "changed_options"):
        info.pop(key)
    return info


def test_run_directories_from_before_options_resume_and_are_reused(tmp_path, reference):
    from mmbench.plugins import get_plugins
    from mmbench.runner import upgrade_spec

    out = tmp_path / "runs"
    shutil.copytree(reference[0], out)
    moe, poe = out / "tiny-digits" / "moe" / "seed-0", out / "tiny-digits" / "poe" / "seed-0"
    done = _as_before_options(poe)
    (poe / "run.json").write_text(json.dumps(done))
    interrupted = {**_as_before_options(moe), "status": "running"}  # killed after its last epoch
    (moe / "run.json").write_text(json.dumps(interrupted))
    (moe / "metrics.jsonl").unlink()

    rc, _, stderr = mmbench("run", *GRID, "--out", str(out))
    assert rc == 0, stderr
    assert f"resuming {moe} from epoch 10 of 10" in stderr and "other settings" not in stderr
    assert json.loads((poe / "run.json").read_text()) == done  # finished: reused as it was
    assert _board(out) == reference[1]

    plugins = get_plugins(PLUGINS)
    old = {**done["spec"], "dataset": "digits", "dataset_options": {"partners": "20"}}
    assert upgrade_spec(old, plugins)["dataset_options"] == {}  # the default, given as text
    old["dataset_options"] = {"partners": "1"}
    old["hparams"]["test_pairs"] = 100
    upgraded = upgrade_spec(old, plugins)
    assert upgraded["dataset_options"] == {"partners": 1} and upgraded["options"] == {"test_bound": {"pairs": 100}}
    assert set(upgraded["hparams"]) == {"latent_dim", "K", "epochs", "batch_size", "lr", "estimator"}
