"""``polymnist``: the published PolyMNIST (Sutter, Daunhawer & Vogt, ICLR 2021), read from its
files — five 28×28 RGB modalities, each an MNIST digit drawn (pixels inverted) on random crops
of its own background photograph, so the digit is what all five share.

The files are laid out as the authors' dataset class writes and reads them (MoPoE's
``mmnist/MMNISTDataset.py``, MMVAE+'s ``datasets_PolyMNIST.py``)::

    <data-dir>/PolyMNIST/train/m0/<index>.<label>.png   ... m4/   (60,000 per modality)
    <data-dir>/PolyMNIST/test/m0/<index>.<label>.png    ... m4/   (10,000 per modality)

``<index>`` counts the items of one label, so a file's name (index and label) is its tuple: the
files of one name across m0..m4 show the same digit class and form one tuple. (The authors'
loaders pair by directory listing order; pairing by name is what that order stands for.) MoPoE's
scripts unpack the same files as ``MMNIST/``; either folder name is read. The decoded images are
cached as one tensor file under ``<data-dir>/polymnist/``.

Defaults are MoPoE's PolyMNIST settings (its ``job_polymnist``: latent 512, batch 256, learning
rate 5e-4, 300 epochs) with K = 1.

References: Sutter, Daunhawer & Vogt, "Generalized Multimodal ELBO", ICLR 2021.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from mmbench import hookimpl
from mmbench.api import Option, PairedData, Split
from mmbench.datasets import CountedModalities, load_cached
from mmbench.errors import DataError
from mmbench.modalities import ImageModality
from mmbench.published import register_folder

VERSION = 1  # bump when the reading changes: it is part of the cache key
SIDE = 28
MODALITIES = 5
FOLDERS = ("PolyMNIST", "MMNIST")
ITEM = re.compile(r"^(\d+)\.(\d)\.png$")
WHERE = ("get PolyMNIST.zip (https://zenodo.org/record/4899160, 'PolyMNIST.zip') and unzip it into the "
         "data directory, so that it holds PolyMNIST/train/m0 .. m4/ and PolyMNIST/test/m0 .. m4/")


def find_root(data_dir: Path) -> Path | None:
    """The folder holding train/ and test/, under one of the published folder names."""
    for name in FOLDERS:
        root = Path(data_dir) / name
        if all((root / split / "m0").is_dir() for split in ("train", "test")):
            return root
    return None


def read_split(folder: Path, modalities: int) -> tuple[dict, torch.Tensor]:
    """({m<j>: uint8 images [N, 3, 28, 28]}, labels [N]) of one split, item n of every modality
    the file of the n-th name (sorted by label, then index)."""
    names = None
    for j in range(modalities):
        directory = folder / f"m{j}"
        found = sorted(p.name for p in directory.glob("*.png")) if directory.is_dir() else []
        if not found:
            raise DataError(f"dataset 'polymnist' finds no PNG files in {directory}; {WHERE}")
        odd = [n for n in found if not ITEM.match(n)]
        if odd:
            raise DataError(f"{directory / odd[0]} is not named <index>.<label>.png as PolyMNIST's files are "
                            f"({len(odd)} such files); {WHERE}")
        if names is None:
            names = found
        elif found != names:
            missing = sorted(set(names) ^ set(found))
            raise DataError(f"{directory} and {folder / 'm0'} do not hold the same items ({len(missing)} names in "
                            f"only one of them, e.g. {missing[0]}); unzip PolyMNIST.zip again")
    names.sort(key=lambda n: (int(ITEM.match(n)[2]), int(ITEM.match(n)[1])))
    labels = torch.tensor([int(ITEM.match(n)[2]) for n in names])
    return {f"m{j}": _images(folder / f"m{j}", names) for j in range(modalities)}, labels


def _images(directory: Path, names: list[str]) -> torch.Tensor:
    from PIL import Image

    out = np.empty((len(names), SIDE, SIDE, 3), dtype=np.uint8)
    for i, name in enumerate(names):
        with Image.open(directory / name) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape != (SIDE, SIDE, 3):
            raise DataError(f"{directory / name} is {pixels.shape[1]}×{pixels.shape[0]}, not PolyMNIST's 28×28")
        out[i] = pixels
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def image_modalities(M: int) -> list[ImageModality]:
    """m0 .. m(M-1): 28 px halves cleanly twice (28 -> 14 -> 7), two conv layers each way; the
    background-contrast channel hands networks and judges the inverted stroke on any photo."""
    return [ImageModality(f"m{j}", (3, SIDE, SIDE), arch="conv", channels=(32, 64), background_contrast=True)
            for j in range(M)]


class PolyMNISTFiles(CountedModalities):
    name = "polymnist"
    description = ("PolyMNIST (Sutter et al., ICLR 2021), read from its published PNG files: "
                   f"M of its {MODALITIES} modalities (option modalities, default {MODALITIES})")
    num_classes = 10
    defaults = dict(latent_dim=512, K=1, epochs=300, batch_size=256, lr=5e-4)
    options = (Option("modalities", MODALITIES, f"M: use m0 .. m(M-1) of the files' {MODALITIES} modalities",
                      low=2, high=MODALITIES),)

    def build_modalities(self, M: int):
        return image_modalities(M)

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        root = find_root(data_dir)
        if root is None:
            fetch = "mmbench cannot fetch it; " if download else ""
            raise DataError(f"dataset 'polymnist' has no files under {Path(data_dir).resolve()}: {fetch}{WHERE}")
        cache = Path(data_dir) / "polymnist" / f"polymnist-files-v{VERSION}-M{self.num_modalities}.pt"
        return load_cached(cache, lambda: self._build(root))

    def _build(self, root: Path) -> PairedData:
        splits = []
        for split in ("train", "test"):
            pools, labels = read_split(root / split, self.num_modalities)
            index = torch.arange(len(labels)).unsqueeze(1).expand(-1, self.num_modalities).contiguous()
            splits.append(Split(pools=pools, pool_labels={name: labels for name in pools}, index=index, labels=labels))
        return PairedData(*splits, info={"source": str(root), "modalities": self.num_modalities, "version": VERSION,
                                         "items": {"train": len(splits[0]), "test": len(splits[1])}})


@hookimpl
def register_datasets(register):
    register(PolyMNISTFiles())


@hookimpl
def register_published(register):
    register_folder(register, Path(__file__).with_name("published"))
