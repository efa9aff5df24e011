"""Helpers dataset plugins share: pairing by class, stratified splits, cached construction."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .api import PairedData, Split
from .errors import DataError


def stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Indices (train, test) with the same class proportions, each sorted."""
    train, test = [], []
    for c in np.unique(labels):
        ids = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(ids) * test_fraction))
        test.extend(ids[:n_test])
        train.extend(ids[n_test:])
    return np.sort(train), np.sort(test)


def pair_by_class(labels_a, labels_b, partners: int, rng: np.random.Generator):
    """Pairs (a, b) of the same class, as the MMVAE paper pairs MNIST with SVHN.

    Per class, ``partners`` rounds each match a random permutation of that class's a-items
    with one of its b-items (the shorter list cycled), so every item of the larger side gets
    exactly ``partners`` partners and every item of the smaller side at least that many.
    Returns two int64 tensors of equal length.
    """
    labels_a = np.asarray(labels_a)
    labels_b = np.asarray(labels_b)
    out_a, out_b = [], []
    for c in np.unique(labels_a):
        ia, ib = np.flatnonzero(labels_a == c), np.flatnonzero(labels_b == c)
        if len(ib) == 0:
            continue
        n = max(len(ia), len(ib))
        for _ in range(partners):
            out_a.append(np.resize(rng.permutation(ia), n))
            out_b.append(np.resize(rng.permutation(ib), n))
    return torch.as_tensor(np.concatenate(out_a)), torch.as_tensor(np.concatenate(out_b))


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_state(data: PairedData) -> dict:
    split = lambda s: {"pools": s.pools, "pool_labels": s.pool_labels, "index": s.index, "labels": s.labels}  # noqa: E731
    return {"train": split(data.train), "test": split(data.test), "info": data.info}


def _from_state(state: dict) -> PairedData:
    return PairedData(Split(**state["train"]), Split(**state["test"]), state["info"])


def load_cached(path: Path, build: Callable[[], PairedData]) -> PairedData:
    """The dataset cached at ``path``, built (and cached atomically) when absent or unreadable."""
    path = Path(path)
    if path.exists():
        try:
            return _from_state(torch.load(path, weights_only=True))
        except Exception:
            pass  # a corrupt or foreign cache is rebuilt, never used
    data = build()
    try:
        atomic_torch_save(_to_state(data), path)
    except OSError as exc:
        raise DataError(f"cannot write the dataset cache {path}: {exc}; pass a writable --data-dir") from None
    return data
