"""Judges as files that travel: ``mmbench judges export DIR`` writes a dataset's judges (every
modality, both families) with a manifest of their content hashes; ``mmbench judges import DIR``
checks every file against it and puts them where runs look for judges, so that two labs judge
with the same classifiers.

Manifest ``judges.json`` (format 1)::

    {"format": 1, "mmbench": "0.1.0",
     "judges": [{"file": "digits-grey-<key>.pt", "dataset": "digits", "modality": "grey",
                 "family": "cnn", "sha256": "<content hash of the weights>",
                 "file_sha256": "<hash of the file's bytes>", "test_acc": 0.989}, ...]}

A judge's file name carries its key (data fingerprint, modality, architecture, recipe), so an
imported judge is used exactly where the data and the judge's recipe are the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from . import __version__
from .errors import MMBenchError
from .integrity import file_sha256
from .judges import FAMILIES, content_hash, get_judge, judge_path, untrained
from .results import atomic_write_json

FORMAT = 1
MANIFEST = "judges.json"


def export_judges(dataset, data, cache_dir: Path, out_dir: Path, kinds=tuple(FAMILIES)) -> list[dict]:
    """Every judge of ``dataset`` (trained first where the cache lacks it), copied to ``out_dir``
    with the manifest; returns the manifest's entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for kind in kinds:
        for m, modality in enumerate(dataset.modalities_for(data)):
            judge = get_judge(dataset, data, m, cache_dir, kind)
            if judge is None:
                continue
            source = judge_path(dataset, data, m, untrained(dataset, data, m, kind), cache_dir, kind)
            shutil.copyfile(source, out_dir / source.name)
            entries.append({"file": source.name, "dataset": dataset.name, "modality": modality.name, "family": kind,
                            "sha256": judge.digest, "file_sha256": file_sha256(source), "test_acc": judge.test_acc})
    if not entries:
        raise MMBenchError(f"dataset '{dataset.name}' has no modality with a judge; nothing to export")
    atomic_write_json(out_dir / MANIFEST, {"format": FORMAT, "mmbench": __version__, "judges": entries})
    return entries


def import_judges(in_dir: Path, cache_dir: Path) -> list[dict]:
    """Check each judge file of ``in_dir`` against its manifest (bytes and weights), then copy it
    into ``cache_dir``'s judges; nothing is copied unless every file checks. Returns the entries."""
    in_dir = Path(in_dir)
    manifest_path = in_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MMBenchError(f"{manifest_path} is not a readable judges manifest ({exc}); "
                           "export judges with `mmbench judges export DIR` first") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("judges"), list):
        raise MMBenchError(f"{manifest_path} is not a judges manifest of format {FORMAT}")
    for entry in manifest["judges"]:
        _check(in_dir, entry)
    target = Path(cache_dir) / "judges"
    target.mkdir(parents=True, exist_ok=True)
    for entry in manifest["judges"]:
        shutil.copyfile(in_dir / entry["file"], target / entry["file"])
    return manifest["judges"]


def _check(in_dir: Path, entry: dict) -> None:
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or Path(name).name != name or entry.get("family") not in FAMILIES:
        raise MMBenchError(f"{in_dir / MANIFEST}: entry {entry!r} names no judge file of a known family")
    path = in_dir / name
    if not path.is_file():
        raise MMBenchError(f"{path} is listed in {MANIFEST} but missing")
    if file_sha256(path) != entry.get("file_sha256"):
        raise MMBenchError(f"{path} does not match its sha256 in {MANIFEST}: it changed after export")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)["net"]
    except Exception as exc:
        raise MMBenchError(f"{path} is not a judge file ({type(exc).__name__}: {exc})") from None
    if content_hash(weights) != entry.get("sha256"):
        raise MMBenchError(f"the weights in {path} are not the judge {MANIFEST} names (content hash differs)")
