"""Artifacts beside a run: what each wrote is listed in run.json relative to the run, one that
raises (or lists files it did not write) is reported without failing the run, and the md
leaderboard links every listed file relative to the results directory."""

import json
from pathlib import Path

import pytest

from mmbench.api import Artifact, Option
from mmbench.artifacts import resolve_artifacts, write_artifacts
from mmbench.errors import MMBenchError
from mmbench.leaderboard import render, scan_runs
from mmbench.results import atomic_write_json, atomic_write_text, write_metrics
from mmbench.testing import ConformanceError, check_artifact, tiny_context

pytestmark = pytest.mark.usefixtures("single_thread")


class Report(Artifact):
    name = "report"
    description = "an HTML page naming the modalities (a test artifact)"
    options = (Option("title", "report", "the page's title"),)

    def write(self, ctx, folder):
        page = folder / "index.html"
        atomic_write_text(page, f"<h1>{self.option_values['title']}</h1><p>{', '.join(ctx.names)}</p>")
        return [page]


class Raises(Report):
    name = "raises"

    def write(self, ctx, folder):
        raise ValueError("no disk left")


class Elsewhere(Report):
    name = "elsewhere"

    def write(self, ctx, folder):
        atomic_write_text(ctx.run_dir / "stray.txt", "not in my folder")
        return [ctx.run_dir / "stray.txt"]


class Picky(Report):
    name = "picky"

    def skip_reason(self, ctx):
        return "needs a text modality"


@pytest.fixture(scope="module")
def ctx(plugins, tmp_path_factory):
    return tiny_context(plugins.posteriors.get("poe"), run_dir=tmp_path_factory.mktemp("run"))


def test_each_is_listed_reported_or_skipped_and_none_fails(ctx, capsys):
    written, errors, skipped = write_artifacts(ctx, [Report().configure(title="toy"), Raises(), Elsewhere(), Picky()])
    assert written == {"report": ["artifacts/report/index.html"]}
    assert "toy" in (ctx.run_dir / "artifacts" / "report" / "index.html").read_text()
    assert errors["raises"] == "raised ValueError: no disk left"
    assert errors["elsewhere"].startswith("raised MMBenchError: returned paths that are not files it wrote in")
    assert skipped == {"picky": "needs a text modality"}
    stderr = capsys.readouterr().err
    assert "artifact 'raises' raised ValueError: no disk left; the run is kept without it" in stderr
    assert "Traceback" in stderr  # a bug: its author needs the traceback


def test_the_conformance_check_names_what_is_wrong(ctx):
    assert check_artifact(Report(), ctx) == [ctx.run_dir / "artifacts" / "report" / "index.html"]
    with pytest.raises(ConformanceError, match="lies outside the folder it was given"):
        check_artifact(Elsewhere(), ctx)
    assert check_artifact(Picky(), ctx) == "needs a text modality"


def test_names_are_checked(plugins):
    assert resolve_artifacts(plugins, None) == list(plugins.artifacts)
    assert resolve_artifacts(plugins, ["none"]) == []
    with pytest.raises(MMBenchError, match="unknown artifact 'picture'; did you mean 'pictures'"):
        resolve_artifacts(plugins, ["picture"])
    with pytest.raises(MMBenchError, match="name artifacts or none, not both"):
        resolve_artifacts(plugins, ["none", "pictures"])


def _run(root: Path, posterior: str, artifacts: dict) -> Path:
    run_dir = root / "toy" / posterior / "seed-0"
    for paths in artifacts.values():
        for p in paths:
            (run_dir / p).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / p).write_bytes(b"x")
    write_metrics(run_dir / "metrics.jsonl", [{"metric": "fit", "value": 1.0, "unit": "nats", "higher_is_better": True}])
    atomic_write_json(run_dir / "run.json", {"spec": {"dataset": "toy", "posterior": posterior, "seed": 0},
                                             "status": "done", "artifacts": artifacts})
    return run_dir


def test_the_md_leaderboard_links_each_run_s_artifacts(tmp_path):
    root = tmp_path / "runs"
    _run(root, "moe", {"pictures": ["artifacts/pictures/kl.png", "artifacts/pictures/samples_joint.png"],
                       "report": ["artifacts/report/index.html"]})
    _run(root, "poe", {})  # wrote none: no line
    md = render(scan_runs(root), "md", root=root)
    table, links = md.split("\n\nArtifacts:\n")
    assert "| moe" in table and "| poe" in table
    assert links.splitlines() == [
        "- toy/moe/seed-0: pictures [kl.png](toy/moe/seed-0/artifacts/pictures/kl.png), "
        "[samples_joint.png](toy/moe/seed-0/artifacts/pictures/samples_joint.png); "
        "report [index.html](toy/moe/seed-0/artifacts/report/index.html)"]
    for target in (part.split("](")[1].split(")")[0] for part in links.split("[")[1:]):
        assert (root / target).is_file(), target  # relative to the results directory
    assert "Artifacts:" in render(scan_runs(root), "md", transpose=True, root=root)
    for fmt in ("csv", "latex"):
        assert "artifacts/pictures" not in render(scan_runs(root), fmt, root=root)


def test_the_leaderboard_command_links_relative_to_its_folder(tmp_path, capsys):
    from mmbench.cli import main

    root = tmp_path / "runs"
    _run(root, "moe", {"pictures": ["artifacts/pictures/kl.png"]})
    assert main(["leaderboard", str(root)]) == 0
    assert "- toy/moe/seed-0: pictures [kl.png](toy/moe/seed-0/artifacts/pictures/kl.png)" in capsys.readouterr().out
    info = json.loads((root / "toy" / "moe" / "seed-0" / "run.json").read_text())
    assert info["artifacts"] == {"pictures": ["artifacts/pictures/kl.png"]}
