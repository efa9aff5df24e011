"""The example third-party package, plugins/mmbench_mopoe, installed on its own as a user would
(into a folder of its own, not the suite's environment) and run beside a standard posterior."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "plugins" / "mmbench_mopoe"


def _install(tmp_path) -> dict:
    """``pip install plugins/mmbench_mopoe`` into tmp_path/site; returns the env that sees it."""
    source = tmp_path / "src"
    # pip builds in the source tree: build a copy, so the working tree stays clean
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def test_mopoe_is_installed_on_its_own_and_runs_beside_moe(tmp_path, mmbench_home):
    # one thread: on a busy machine a second one's spin-waiting costs more than it brings
    env = {**_install(tmp_path), "MMBENCH_HOME": str(mmbench_home), "OMP_NUM_THREADS": "1", "COLUMNS": "4000"}
    listed = run_cli("plugins", env=env)
    assert "mopoe  (mmbench-mopoe 0.1.0)" in listed.stdout and "posterior mopoe" in listed.stdout
    assert "BROKEN" not in listed.stdout

    out = tmp_path / "runs"
    proc = run_cli("run", "--posteriors", "moe,mopoe", "--epochs", "1", "--data-option", "partners=1",
                   "--data-option", "renderings=1",
                   "--metrics", "coherence_cross", "--quiet", "--out", str(out), env=env,
                   timeout=1800)  # the judges train here unless an earlier test trained them
    assert proc.returncode == 0, proc.stderr
    assert "| mopoe " in proc.stdout and "| moe " in proc.stdout
    run_dir = out / "digits" / "mopoe" / "seed-0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done"
    assert info["provenance"]["posterior_plugin"] == {"plugin": "mopoe", "distribution": "mmbench-mopoe",
                                                      "version": "0.1.0"}
    rows = {r["metric"]: r["value"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    assert rows["decoder_passes"] == 3.0  # counted: linear in M, although the subsets are 2^3 − 1
    cross = [v for k, v in rows.items() if k.startswith("coherence_cross[")]
    assert len(cross) == 6 and all(0 <= v <= 1 for v in cross)


def test_mopoe_is_not_part_of_the_mmbench_distribution():
    """Never imported by the core, not declared by the root package, not found by its package search."""
    from setuptools import find_namespace_packages

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "mmbench_mopoe" not in root["project"]["entry-points"]["mmbench"].values()
    find = root["tool"]["setuptools"]["packages"]["find"]
    shipped = {p for where in find["where"]
               for p in find_namespace_packages(str(ROOT / where), include=find["include"], exclude=find.get("exclude", ()))}
    assert "mmbench" in shipped and not any(p.startswith("mmbench_mopoe") for p in shipped), shipped
    core = "".join(p.read_text() for p in (ROOT / "mmbench").glob("*.py"))
    assert "mmbench_mopoe" not in core
    own = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert own["project"]["name"] == "mmbench-mopoe" and own["project"]["entry-points"]["mmbench"] == {"mopoe": "mmbench_mopoe"}
