"""Run directories on disk: atomic writes, reading runs back, and the comparison table.

Layout: ``<out>/<dataset>/<posterior>/seed-<n>/`` with ``run.json`` (config, provenance,
status, times), ``metrics.jsonl`` (one row per metric value) and ``checkpoint.pt``."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

SCHEMA_VERSION = 1


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a temporary file in the same folder, then a rename: a reader never
    sees half a file, and a kill leaves at most a ``.<name>.*.tmp`` that the next runner removes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_save_figure(fig, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically, and the figure closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_metrics(path: Path, rows: list[dict]) -> None:
    """The rows, then their checksum beside them (``metrics.jsonl.sha256``): a file cut at a
    line end still parses, but no longer matches it."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(path, text)
    atomic_write_text(checksum_path(path), hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n")


def checksum_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def utc_now() -> str:
    """The time a run.json records (started, finished, evaluated): UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def differences(old: dict, new: dict) -> str:
    """What differs between two records of settings (specs, checkpoint configs), one level of
    nesting deep: 'epochs 1 vs 2, loglik {'samples': 8} vs None'."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} {a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key} {a} vs {b}")
    return ", ".join(diffs) or "unknown"


@dataclass
class RunRecord:
    path: Path
    info: dict
    metrics: list[dict]

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_metrics(path: Path) -> list[dict] | None:
    """The rows of a metrics file, or None when it is missing or any line is malformed."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    if not all(isinstance(r, dict) and "metric" in r and "value" in r for r in rows):
        return None
    return rows
