"""What a runner trusts in a run directory before reusing it.

A run directory may hold a file that is corrupt (a disk filled up, a copy was cut short) or
foreign (another tool's file, another version's layout). Such a file is never silently used:
it is named in a warning, kept beside the others as ``<name>.corrupt`` for a person to look
at, and the run is redone — from its last good checkpoint when there is one, since a run's
numbers depend only on its spec, seed and checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import asdict
from pathlib import Path

from .errors import MMBenchError
from .results import checksum_path, differences, read_json, read_metrics

CHECKPOINT_KEYS = {"model", "optimizer", "rng", "epoch", "history", "config"}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def warn(message: str) -> None:
    print(f"mmbench: warning: {message}", file=sys.stderr)


def quarantine(path: Path, why: str, then: str) -> None:
    """Move a file that must not be used out of the way, keeping it, and say so."""
    kept = path.with_name(path.name + ".corrupt")
    os.replace(path, kept)
    warn(f"{path} {why}; kept as {kept.name}, {then}")


def run_dir_problem(run_dir: Path) -> tuple[Path, str] | None:
    """The first file of ``run_dir`` that must not be trusted, and why; None when all is well.

    - ``run.json`` that is not JSON, or not a run record of mmbench;
    - ``metrics.jsonl`` of a finished run that is missing, malformed, or does not match its
      checksum ``metrics.jsonl.sha256`` (written by :func:`mmbench.results.write_metrics`; a
      file cut at a line end still parses, but fails that).
    The checkpoint is checked where it is read, by :func:`resumable_checkpoint`."""
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.exists():
        return None
    info = read_json(info_path)
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict) or "status" not in info:
        return info_path, "is not valid JSON" if info is None else "is not an mmbench run record (no spec or status)"
    if info["status"] != "done":
        return None
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.exists():
        return metrics_path, "is missing although run.json says the run finished"
    checksum = checksum_path(metrics_path)
    expected = checksum.read_text(encoding="utf-8").strip() if checksum.exists() else None
    if read_metrics(metrics_path) is None:
        return metrics_path, "is truncated or malformed (a line is not a metric row)"
    if expected and file_sha256(metrics_path) != expected:
        return metrics_path, f"does not match its checksum {checksum.name} (truncated or edited)"
    return None


def check_run_dir(run_dir: Path) -> None:
    """Before a runner uses ``run_dir``: set aside the file :func:`run_dir_problem` distrusts
    (the run is then redone: evaluated again from its final checkpoint when only the metrics
    were bad), and remove temporary files of writes that a kill interrupted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    problem = run_dir_problem(run_dir)
    if problem is None:
        return
    path, why = problem
    if not path.exists():
        warn(f"{path} {why}; evaluating this run again")
    elif path.name == "run.json":
        quarantine(path, why, "this run is done again")
    else:
        quarantine(path, why, "evaluating this run again")


def resumable_checkpoint(path: Path, cfg, model) -> dict | None:
    """The checkpoint at ``path`` when it can continue a run of ``cfg`` on ``model``; else None.

    A checkpoint that cannot be read (corrupt, or a pickle that ``weights_only`` refuses), that
    lacks the keys mmbench writes, was written with other settings, or holds tensors of other
    shapes is reported by name and set aside; the run then trains from the start."""
    from .train import load_checkpoint

    path = Path(path)
    start_over = "this run is trained again from the start"
    try:
        state = load_checkpoint(path)
    except MMBenchError as exc:
        reason = str(exc).removeprefix(f"checkpoint {path} ")
        quarantine(path, f"is not a readable checkpoint ({reason})", start_over)
        return None
    if state is None:
        return None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
        quarantine(path, "is not an mmbench checkpoint (keys missing)", start_over)
        return None
    # a checkpoint from before precisions existed was trained in fp32, from before micro-batches
    # on whole batches; how a step is chunked does not change its math, so any chunking resumes
    # (the caller keeps the one it began with unless another is asked for)
    saved = ({"precision": "fp32", "micro_batch": state["config"].get("batch_size"), **state["config"]}
             if isinstance(state["config"], dict) else {})
    chunks = saved.get("micro_batch")
    wanted = {**asdict(cfg), "micro_batch": chunks}
    if saved != wanted:
        quarantine(path, f"was written with other settings ({differences(saved, wanted)})", start_over)
        return None
    if not (isinstance(chunks, int) and not isinstance(chunks, bool) and chunks >= 1):
        quarantine(path, f"records a step chunking that is no positive number of items ({chunks!r})", start_over)
        return None
    state["config"] = saved
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in state["model"].items()} if isinstance(state["model"], dict) else {}
    if ours != theirs:
        quarantine(path, "holds a model of another architecture", start_over)
        return None
    print(f"mmbench: resuming {path.parent} from epoch {state['epoch']} of {cfg.epochs}", file=sys.stderr)
    return state

