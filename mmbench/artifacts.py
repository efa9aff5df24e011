"""Artifacts of a trained run: each writes files into ``<run_dir>/artifacts/<name>/`` through the
evaluation context metrics get; what each wrote is listed in run.json (``artifacts``: {name:
[paths relative to the run directory]}). One that does not apply is recorded with its reason
(``skipped_artifacts``); one that raises, or returns paths it did not write there, is reported
(stderr and run.json's ``artifact_errors``). Neither fails the run."""

from __future__ import annotations

import shutil
import sys
import traceback
from pathlib import Path

import torch

from .errors import MMBenchError
from .settings import NO_ARTIFACTS

FOLDER = "artifacts"


def resolve_artifacts(plugins, names: list[str] | None) -> list:
    """The artifacts ``names`` (None: every registered one; ``none``: none), each typo refused."""
    if names is None:
        return list(plugins.artifacts)
    if NO_ARTIFACTS in names:
        if len(names) > 1:
            raise MMBenchError(f"--artifacts {','.join(names)}: '{NO_ARTIFACTS}' writes no artifact; "
                               "name artifacts or none, not both")
        return []
    return [plugins.artifacts.get(n) for n in names]


def artifact_folder(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / FOLDER / name


def write_artifacts(ctx, artifacts, plugins=None) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """Each artifact on ctx, into its own emptied folder of ``ctx.run_dir``: ({name: [relative
    paths]}, {name: the error it raised}, {name: why it does not apply}). With ``plugins``, an
    error names the plugin and distribution the artifact came from."""
    written, errors, skipped = {}, {}, {}
    for artifact in artifacts:
        torch.manual_seed(ctx.seed)
        origin = (f" (artifact '{artifact.name}' of {plugins.artifacts.provenance(artifact.name)})"
                  if plugins is not None and artifact.name in plugins.artifacts else "")
        reason = artifact.skip_reason(ctx)
        if reason:
            skipped[artifact.name] = reason
            continue
        folder = artifact_folder(ctx.run_dir, artifact.name)
        shutil.rmtree(folder, ignore_errors=True)  # what it lists is what this session wrote
        folder.mkdir(parents=True)
        try:
            paths = [Path(p) for p in artifact.write(ctx, folder)]
            outside = [str(p) for p in paths if not _inside(p, folder) or not p.is_file()]
            if outside:
                raise MMBenchError(f"returned paths that are not files it wrote in {folder}: {', '.join(outside)}")
        except Exception as exc:  # one broken artifact must not lose the trained run
            errors[artifact.name] = f"raised {type(exc).__name__}: {exc}{origin}"
            if not isinstance(exc, MMBenchError):
                traceback.print_exc(file=sys.stderr)
            print(f"mmbench: warning: artifact '{artifact.name}' raised {type(exc).__name__}: {exc}{origin}; "
                  "the run is kept without it", file=sys.stderr)
            continue
        root = Path(ctx.run_dir).resolve()
        written[artifact.name] = sorted(p.resolve().relative_to(root).as_posix() for p in paths)
    return written, errors, skipped


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
