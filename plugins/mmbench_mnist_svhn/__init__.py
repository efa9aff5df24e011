"""``mnist-svhn``: the MMVAE paper's first benchmark (§4.2). Each MNIST image is paired with
20 SVHN images of the same digit, and each SVHN image with 20 MNIST images, drawn at random
under a fixed seed; the pairing index is saved beside the data (``<data-dir>/mnist-svhn/``) so
that every run, on any machine with the same files, trains on the same pairs.

Modalities follow Appendix F: MNIST through an MLP (784-400-D), SVHN through convolutions
(32-64-128 channels); both have a Laplace likelihood of scale 0.75, and MNIST's is weighted by
λ = 3·32·32/(28·28) ≈ 3.92 to balance its fewer pixels. Defaults are the paper's: D = 20,
K = 30, batch 128, 30 epochs, Adam at 1e-3.

Images stay uint8 in memory (MNIST 47 MB, SVHN 225 MB instead of 188 MB and 900 MB as
float32); :class:`mmbench.modalities.ImageModality` turns each batch into [0, 1] floats as its
networks and likelihood receive it.

Reference: Shi, Siddharth, Paige & Torr, "Variational Mixture-of-Experts Autoencoders for
Multi-Modal Deep Generative Models", NeurIPS 2019, §4.2 and Appendix F.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from mmbench import hookimpl
from mmbench.api import Dataset, Option, PairedData, Split
from mmbench.datasets import atomic_torch_save, pair_by_class
from mmbench.modalities import ImageModality
from mmbench.published import register_folder

from . import sources

PARTNERS = 20  # the paper's text; its released pairing script used 30 (partners=30 to match it)
SEED = 20191208
PAIRS_VERSION = 1
SPLITS = ("train", "test")


def _labels_digest(labels: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(labels):
        h.update(key.encode())
        h.update(np.ascontiguousarray(labels[key]).tobytes())
    return h.hexdigest()[:16]


def pairs_path(data_dir: Path, partners: int) -> Path:
    return Path(data_dir) / "mnist-svhn" / f"pairs-v{PAIRS_VERSION}-partners{partners}-seed{SEED}.pt"


def load_pairs(path: Path, digest: str):
    """The saved index {split: int64 [N, 2]} when it belongs to these labels, else None."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except Exception:
        print(f"mmbench: warning: the pairing index {path} is unreadable; pairing again", file=sys.stderr)
        return None
    if saved.get("labels") != digest:
        print(f"mmbench: warning: {path} was made for other MNIST/SVHN files; pairing these afresh", file=sys.stderr)
        return None
    return {s: saved[s].long() for s in SPLITS}


def make_pairs(mnist_labels: dict, svhn_labels: dict, partners: int) -> dict:
    """Per split, [N, 2] rows (MNIST item, SVHN item) of the same digit: every item of either
    set meets at least ``partners`` partners of the other (MMVAE §4.2)."""
    rng = np.random.default_rng(SEED)
    pairs = {}
    for s in SPLITS:
        a, b = pair_by_class(mnist_labels[s], svhn_labels[s], partners, rng)
        pairs[s] = torch.stack([a, b], dim=1)
    return pairs


class MnistSvhn(Dataset):
    name = "mnist-svhn"
    description = ("MNIST ↔ SVHN, each image paired with 20 same-digit images of the other set "
                   "(MMVAE §4.2; torchvision's files under --data-dir, --download fetches them)")
    num_classes = 10
    defaults = dict(latent_dim=20, K=30, epochs=30, batch_size=128, lr=1e-3)

    options = (Option("partners", PARTNERS, "same-class partners per image (20 as in the paper; its code used 30)",
                      low=1),)

    def __init__(self):
        self._modalities = [
            ImageModality("mnist", (1, 28, 28), arch="mlp", hidden=400, scale=0.75, weight=3 * 32 * 32 / (28 * 28)),
            ImageModality("svhn", (3, 32, 32), arch="conv", channels=(32, 64, 128), scale=0.75, weight=1.0),
        ]

    @property
    def modalities(self):
        return self._modalities

    @property
    def partners(self) -> int:
        return self.option_values["partners"]

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        root = Path(data_dir)
        if download:
            sources.download(root)
        sources.require(root, self.name)
        mnist = {s: sources.read_mnist(root, s) for s in SPLITS}
        svhn = {s: sources.read_svhn(root, s) for s in SPLITS}
        mnist_labels = {s: mnist[s][1] for s in SPLITS}
        svhn_labels = {s: svhn[s][1] for s in SPLITS}
        digest = _labels_digest({**{f"mnist-{s}": v for s, v in mnist_labels.items()},
                                 **{f"svhn-{s}": v for s, v in svhn_labels.items()}})
        path = pairs_path(root, self.partners)
        pairs = load_pairs(path, digest)
        if pairs is None:
            pairs = make_pairs(mnist_labels, svhn_labels, self.partners)
            # int32 on disk: 1.5 M training pairs take 12 MB
            atomic_torch_save({"labels": digest, "partners": self.partners, "seed": SEED,
                               **{s: pairs[s].int() for s in SPLITS}}, path)
        splits = []
        for s in SPLITS:
            y_mnist, y_svhn = torch.from_numpy(mnist_labels[s]), torch.from_numpy(svhn_labels[s])
            index = pairs[s]
            splits.append(Split(pools={"mnist": torch.from_numpy(mnist[s][0]), "svhn": torch.from_numpy(svhn[s][0])},
                                pool_labels={"mnist": y_mnist, "svhn": y_svhn},
                                index=index, labels=y_mnist[index[:, 0]]))
        info = {"partners": self.partners, "seed": SEED, "pairs_file": str(path.resolve()), "labels_digest": digest,
                "pairs": {s: len(pairs[s]) for s in SPLITS},
                "items": {f"{m}-{s}": len(v[s][1]) for m, v in (("mnist", mnist), ("svhn", svhn)) for s in SPLITS}}
        return PairedData(*splits, info=info)


@hookimpl
def register_datasets(register):
    register(MnistSvhn())


@hookimpl
def register_published(register):
    register_folder(register, Path(__file__).with_name("published"))  # the papers' numbers on this dataset
