"""Helpers dataset plugins share: pairing by class, stratified splits, cached construction, and
modalities built from a modality-count option."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .api import Dataset, PairedData, Split
from .errors import DataError
from .results import atomic_write
from .settings import MODALITY_COUNT


class CountedModalities(Dataset):
    """A dataset of M like modalities, M its ``modalities`` option: it declares that option and
    ``build_modalities(M)``; the modalities are built again for each configured M."""

    def build_modalities(self, M: int) -> list:
        raise NotImplementedError

    def __init__(self):
        self._modalities = self.build_modalities(self.num_modalities)

    def configure(self, **values):
        configured = super().configure(**values)
        configured._modalities = configured.build_modalities(configured.num_modalities)
        return configured

    @property
    def modalities(self):
        return self._modalities

    @property
    def num_modalities(self) -> int:
        return self.option_values[MODALITY_COUNT]


def stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Indices (train, test) with the same class proportions, each sorted."""
    train, test = [], []
    for c in np.unique(labels):
        ids = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(ids) * test_fraction))
        test.extend(ids[:n_test])
        train.extend(ids[n_test:])
    return np.sort(train), np.sort(test)


def group_by_class(label_lists, partners: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Tuples of items of the same class, one item from each of M lists.

    Per class, ``partners`` rounds each line up a random permutation of that class's items in
    every list (the shorter lists cycled), so every item of the largest list appears in
    exactly ``partners`` tuples and every other item in at least that many. A class missing
    from any list forms no tuples. Returns M int64 tensors of equal length.
    """
    label_lists = [np.asarray(labels) for labels in label_lists]
    out = [[] for _ in label_lists]
    for c in np.unique(label_lists[0]):
        ids = [np.flatnonzero(labels == c) for labels in label_lists]
        if any(len(i) == 0 for i in ids):
            continue
        n = max(len(i) for i in ids)
        for _ in range(partners):
            for column, i in zip(out, ids):
                column.append(np.resize(rng.permutation(i), n))
    return [torch.as_tensor(np.concatenate(column)) if column else torch.zeros(0, dtype=torch.int64)
            for column in out]


def pair_by_class(labels_a, labels_b, partners: int, rng: np.random.Generator):
    """Pairs (a, b) of the same class, as the MMVAE paper pairs MNIST with SVHN (§4.2: each
    instance with ``partners`` = 20 same-class instances of the other set): the two-list case
    of :func:`group_by_class`. Returns two int64 tensors of equal length.
    """
    a, b = group_by_class([labels_a, labels_b], partners, rng)
    return a, b


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a reader never sees half a file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _to_state(data: PairedData) -> dict:
    split = lambda s: {"pools": s.pools, "pool_labels": s.pool_labels, "index": s.index, "labels": s.labels}  # noqa: E731
    return {"train": split(data.train), "test": split(data.test), "info": data.info, "derived": data.derived}


def _from_state(state: dict) -> PairedData:
    # a cache from before `derived` was kept has no such key: it raises, and is rebuilt
    return PairedData(Split(**state["train"]), Split(**state["test"]), state["info"], state["derived"])


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


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: Path, expected: str) -> None:
    """Raise a DataError naming ``path`` when its MD5 is not the one its publisher lists."""
    found = file_md5(path)
    if found != expected:
        raise DataError(f"{path} is corrupt or truncated (MD5 {found}, the published checksum is {expected}); "
                        "delete it and fetch it again (--download)")


def require_files(dataset: str, root: Path, names, fetch_hint: str) -> None:
    """Raise one DataError listing every file of ``names`` (relative to ``root``) that is absent."""
    missing = [str(n) for n in names if not (Path(root) / n).is_file()]
    if missing:
        raise DataError(f"dataset '{dataset}' is missing {len(missing)} file(s) under {Path(root).resolve()}: "
                        f"{', '.join(missing)}; {fetch_hint}")
