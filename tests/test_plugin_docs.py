"""docs/plugins.md stays true: every hook and every member of the base classes is documented,
each hook's example is a plugin that loads and conforms, and the tutorial's commands, run
verbatim in an empty folder, take a new package to `mmbench plugins` and into a run."""

import dataclasses
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmbench import api, hookspecs
from mmbench.evaluation import EvalContext
from mmbench.plugins import load_plugins
from mmbench.testing import check_artifact, check_dataset, check_metric, check_posterior, check_tracker, tiny_context

ROOT = Path(__file__).resolve().parent.parent


# Tiny models gain nothing from a second thread, and on a busy machine its spin-waiting costs
# far more than it brings (a toy judge: 1 CPU-second on one thread, 31 on two).
pytestmark = pytest.mark.usefixtures("single_thread")
DOC = (ROOT / "docs" / "plugins.md").read_text()
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)


def _section(title: str) -> str:
    """The text of the level-2 section whose heading starts with ``title``."""
    start = DOC.index(f"\n## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


def _hooks():
    return [(n, getattr(hookspecs, n)) for n in dir(hookspecs) if n.startswith("register_")]


@pytest.mark.parametrize("name", [n for n, _ in _hooks()])
def test_every_hook_is_documented_with_its_signature(name):
    signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
    headings = re.findall(r"^#+ (.+)$", DOC, re.M)
    blocks = [body for lang, body in FENCE.findall(DOC) if lang == "python"]
    assert signature in headings or any(f"def {signature}" in b for b in blocks), \
        f"hook {signature} is not documented in docs/plugins.md: give it a heading or a signature block"


def _members(cls) -> set[str]:
    names = {n for n in vars(cls) if not n.startswith("_")} | {n for n in getattr(cls, "__annotations__", {})}
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return {n for n in names if not n.startswith("_")}


CLASSES = [api.Option, api.Configurable, api.Modality, api.Dataset, api.Split, api.PairedData, api.Posterior,
           api.ObjectiveResult, api.Metric, api.MetricValue, api.Artifact, api.Tracker, api.Executor, EvalContext]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_member_of_the_base_classes_is_documented(cls):
    contracts = _section("The base classes")
    assert re.search(rf"^### .*\b{cls.__name__}\b", contracts, re.M), f"no heading for {cls.__name__}"
    missing = sorted(m for m in _members(cls) if not re.search(rf"`({cls.__name__}\.)?{m}\b", contracts))
    assert not missing, f"{cls.__name__} members not in docs/plugins.md's contracts: {missing}"


def test_readme_links_the_guide():
    assert "(docs/plugins.md)" in (ROOT / "README.md").read_text()


def test_every_hook_example_is_a_plugin_that_loads_and_conforms(tmp_path):
    examples = [body for lang, body in FENCE.findall(_section("The hooks")) if lang == "python" and "import" in body]
    assert len(examples) == len(_hooks())
    folder = tmp_path / "examples"
    folder.mkdir()
    for i, body in enumerate(examples):
        (folder / f"example_{i}.py").write_text(body)
    loaded = load_plugins(folder)
    assert not loaded.errors, loaded.errors
    mine = {p.provenance.plugin: p.registered for p in loaded.plugins if p.provenance.plugin.startswith("example_")}
    assert sorted(kind for r in mine.values() for kind, names in r.items() if names) == \
        sorted(n[len("register_"):] for n, _ in _hooks())

    by_kind = {kind: names for r in mine.values() for kind, names in r.items() if names}
    for name in by_kind["datasets"]:
        check_dataset(loaded.datasets.get(name), data_dir=tmp_path / "data")
    for name in by_kind["posteriors"]:
        check_posterior(loaded.posteriors.get(name))
    ctx = tiny_context(loaded.posteriors.get(by_kind["posteriors"][0]), run_dir=tmp_path / "run")
    for name in by_kind["metrics"]:
        assert check_metric(loaded.metrics.get(name), ctx)
    for name in by_kind["artifacts"]:
        (csv,) = check_artifact(loaded.artifacts.get(name), ctx)
        assert len(csv.read_text().splitlines()) == 1 + min(200, len(ctx.data.test))
    for name in by_kind["trackers"]:
        check_tracker(loaded.trackers.get(name), tmp_path / "tracked")
        lines = (tmp_path / "tracked" / "log.csv").read_text().splitlines()
        assert lines[-1] == "toy/check/seed-0,3,status,done" and len(lines) == 1 + 3 + 2 + 1 + 1


def test_the_options_example_declares_what_the_cli_and_the_grid_file_set(tmp_path, capsys):
    """The Options section's metric loads and conforms with its option set; its command line
    and its grid file describe the same grid, whose cells carry the options they set."""
    from mmbench.cli import main
    from mmbench.grid import Layer, load_grid_file, plan

    blocks = {lang: body for lang, body in FENCE.findall(_section("Options")) if lang in ("python", "bash", "toml")}
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "options_example.py").write_text(blocks["python"])
    loaded = load_plugins(folder)
    assert not loaded.errors, loaded.errors
    metric = loaded.metrics.get("latent_norm")
    (value,) = check_metric(metric.configure(items=30), tiny_context(loaded.posteriors.get("poe")))
    assert value.details == {"items": 30}

    command = shlex.split(blocks["bash"].strip())
    assert command[:2] == ["mmbench", "run"]
    out = str(tmp_path / "runs")
    assert main(["--plugins-dir", str(folder), *command[1:], "--out", out, "--dry-run"]) == 0
    from_flags = capsys.readouterr().out
    (tmp_path / "grid.toml").write_text(blocks["toml"])
    assert main(["--plugins-dir", str(folder), "run", "--config", str(tmp_path / "grid.toml"), "--out", out,
                 "--dry-run"]) == 0
    from_file = capsys.readouterr().out
    assert from_flags == from_file and "'latent_norm': {'items': 200}" in from_flags

    grid = plan([load_grid_file(tmp_path / "grid.toml", loaded), Layer("", {"out": out})], loaded)
    assert {(c.dataset, tuple(c.dataset_options.items()), c.options["latent_norm"]["items"]) for c in grid.cells} == \
        {("digits", (("partners", 5),), 200)}


def _tutorial_script(title: str = "Tutorial") -> tuple[str, list[str]]:
    """A tutorial section as one shell script: its bash blocks verbatim, its files (blocks
    starting ``# file: NAME``) written where the reader saves them; and the output it promises."""
    lines, promised = ["set -euo pipefail"], []
    for lang, body in FENCE.findall(_section(title)):
        first = body.splitlines()[0]
        if lang == "bash":
            lines.append(body)
        elif first.startswith("# file: "):
            lines.append(f"cat > {first[len('# file: '):].strip()} <<'MMBENCH_DOC_EOF'\n{body}MMBENCH_DOC_EOF")
        elif lang == "text":
            promised += [line.strip() for line in body.splitlines() if line.strip()]
    return "\n".join(lines) + "\n", promised


def _run_tutorial(title: str, tmp_path, mmbench_home) -> tuple[str, Path]:
    """Run a tutorial section verbatim in an empty folder; check the output it promises.
    Returns stdout and the folder pip installed into."""
    script, promised = _tutorial_script(title)
    assert "pip install ." in script and "mmbench plugins" in script and promised
    site = tmp_path / "site"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ,
           # pip installs into a folder on the path, not into the suite's environment; offline,
           # building with the setuptools already here (pip reads PIP_NO_BUILD_ISOLATION=0 as
           # --no-build-isolation), the mmbench dependency being the one already installed.
           "PIP_TARGET": str(site), "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MMBENCH_HOME": str(mmbench_home),
           "OMP_NUM_THREADS": "1"}  # tiny models: a second thread's spin-waiting costs more than it brings
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    for line in promised:
        assert line in out, f"the tutorial promises {line!r}; mmbench printed:\n{out[:3000]}"
    return out, site


def test_the_tutorial_runs_verbatim(tmp_path, mmbench_home):
    out, site = _run_tutorial("Tutorial", tmp_path, mmbench_home)
    assert (site / "mmbench_active_units-0.1.0.dist-info").is_dir()
    assert "1 passed" in out
    assert "active_units[grey]" in out and "| poe" in out  # the leaderboard's column and row


def test_the_private_latent_tutorial_runs_verbatim(tmp_path, mmbench_home):
    """A third-party model with a private latent per modality, from an empty folder to a run."""
    out, site = _run_tutorial("A posterior with a private latent", tmp_path, mmbench_home)
    assert (site / "mmbench_private_latents-0.1.0.dist-info").is_dir()
    assert "2 passed" in out
    # the leaderboard (transposed): a row per metric, the model's column; the probe and the
    # log-likelihoods, whose proposals are the block posteriors, both gave values
    assert re.search(r"^\| latent_acc\[joint\] .*\| +[0-9.]+", out, re.M), out[-3000:]
    assert re.search(r"^\| loglik\[grey\|colour\] .*\| +-[0-9.]+", out, re.M), out[-3000:]
