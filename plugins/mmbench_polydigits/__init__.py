"""``polydigits``: M paired image modalities (2 to 8) generated from scikit-learn's bundled
digits, in the spirit of PolyMNIST (Sutter, Daunhawer & Vogt, ICLR 2021): every modality shows
the digit of the tuple's class on its own kind of background, so the digit is the content all
modalities share and the texture, colours, position and handwriting are private to each.

It is not PolyMNIST (MNIST digits on crops of five photographs, read from the published files by
the ``polymnist`` dataset), and its numbers do not compare with PolyMNIST's. Until issue 15 it was
called ``polymnist``: runs recorded under that name by this construction are read as
``polydigits`` (``former_names``, ``recorded``).

It exists for runs with more than two modalities and for the cost benchmark (the MMVAE
objective needs M² decoder passes, MMVAE paper §3 and Appendix B), and needs no download: the
1,797 source digits ship with scikit-learn. As in the paper's MNIST–SVHN pairing, a tuple holds
*different* source digits of one class (one per modality), and every item appears in
``partners`` tuples (20 by default). Modality m always renders the same way, whatever M, so
the first M modalities of an M' > M set are the M-modality set's pools.

References: Shi et al., "Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep
Generative Models", NeurIPS 2019; Sutter et al., "Generalized Multimodal ELBO", ICLR 2021.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmbench import hookimpl
from mmbench.api import Option, PairedData, Split
from mmbench.datasets import CountedModalities, group_by_class, load_cached, stratified_split
from mmbench.modalities import ImageModality

VERSION = 2  # bump when the construction changes: it is part of the cache key
SEED = 20210503
SIDE = 28
TEST_FRACTION = 0.2
MAX_MODALITIES = 8
STYLES = ("plain", "horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard",
          "gradient", "rings", "smooth noise")


# ----------------------------------------------------------------------------- backgrounds
def _two_colours(light: torch.Tensor, rng: np.random.Generator):
    """Two random texture colours per item, both light (channels in [0.55, 1]) where ``light``
    [n] is True and both dark ([0, 0.45]) elsewhere: the texture varies, yet a black or white
    stroke stands out on all of it."""
    n = len(light)
    low = torch.where(light, 0.55, 0.0).view(n, 1, 1, 1)
    a = low + 0.45 * torch.as_tensor(rng.uniform(0, 1, size=(n, 3, 1, 1)), dtype=torch.float32)
    b = low + 0.45 * torch.as_tensor(rng.uniform(0, 1, size=(n, 3, 1, 1)), dtype=torch.float32)
    return a, b


def _grid():
    ys, xs = torch.meshgrid(torch.arange(SIDE, dtype=torch.float32), torch.arange(SIDE, dtype=torch.float32),
                            indexing="ij")
    return ys, xs


def _per_item(rng: np.random.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.as_tensor(rng.uniform(low, high, size=(n, 1, 1, 1)), dtype=torch.float32)


def background(style: int, light: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Backgrounds [n, 3, 28, 28] in [0, 1] of texture family ``style``, light or dark per item
    as ``light`` [n] says, with random colours, phases and scales."""
    n = len(light)
    a, b = _two_colours(light, rng)
    ys, xs = _grid()
    phase = _per_item(rng, n, 0, 2 * math.pi)
    period = _per_item(rng, n, 4, 9)
    if style == 0:
        t = torch.zeros(n, 1, SIDE, SIDE)
    elif style in (1, 2, 3):
        coord = {1: ys, 2: xs, 3: (xs + ys) / math.sqrt(2)}[style]
        t = (torch.sin(2 * math.pi * coord / period + phase) > 0).float()
    elif style == 4:
        size = torch.as_tensor(rng.integers(3, 8, size=(n, 1, 1, 1)))
        t = (((ys.long() // size) + (xs.long() // size)) % 2).float()
    elif style == 5:
        angle = _per_item(rng, n, 0, 2 * math.pi)
        t = ((xs - SIDE / 2) * torch.cos(angle) + (ys - SIDE / 2) * torch.sin(angle)) / SIDE + 0.5
    elif style == 6:
        cy, cx = _per_item(rng, n, 0, SIDE), _per_item(rng, n, 0, SIDE)
        t = (torch.sin(2 * math.pi * torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / period + phase) > 0).float()
    elif style == 7:
        coarse = torch.as_tensor(rng.uniform(0, 1, size=(n, 1, 5, 5)), dtype=torch.float32)
        t = F.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic", align_corners=False)
    else:
        raise ValueError(f"no background style {style}")
    t = t.clamp(0, 1).expand(n, 1, SIDE, SIDE)
    return a * (1 - t) + b * t


def stroke_masks(digits8: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """8×8 digits (0..16) -> [N, 1, 28, 28] stroke masks in [0, 1], each resized to 16–24 px
    and placed at a random position (one bilinear resampling for all of them)."""
    n = len(digits8)
    size = rng.integers(16, 25, size=n)
    top = rng.integers(0, SIDE - size + 1)
    left = rng.integers(0, SIDE - size + 1)
    # Output box [left, left + size) in normalised coordinates maps onto the source's [-1, 1].
    scale = torch.as_tensor(SIDE / size, dtype=torch.float32)
    shift_x = torch.as_tensor(-1 - scale.numpy() * (2 * left / SIDE - 1), dtype=torch.float32)
    shift_y = torch.as_tensor(-1 - scale.numpy() * (2 * top / SIDE - 1), dtype=torch.float32)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([scale, zero, shift_x], 1), torch.stack([zero, scale, shift_y], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, SIDE, SIDE), align_corners=False)
    source = torch.as_tensor(digits8, dtype=torch.float32).unsqueeze(1) / 16.0
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def render(digits8: np.ndarray, style: int, rng: np.random.Generator) -> torch.Tensor:
    """Digits drawn on style ``style``'s backgrounds: [N, 3, 28, 28] in [0, 1].

    Half the items get a light texture and a black stroke, half a dark texture and a white
    stroke, so the digit reads on any texture (PolyMNIST inverts its backgrounds' pixels instead,
    which on a busy texture breaks the stroke up)."""
    light = torch.as_tensor(rng.uniform(size=len(digits8)) < 0.5)
    bg = background(style, light, rng)
    mask = stroke_masks(digits8, rng)
    ink = (~light).float().view(-1, 1, 1, 1)
    noise = 0.03 * torch.from_numpy(rng.standard_normal(size=bg.shape, dtype=np.float32))
    return (bg * (1 - mask) + ink * mask + noise).clamp(0, 1)


# ----------------------------------------------------------------------------- dataset
def image_modalities(M: int) -> list[ImageModality]:
    """The M image modalities: a conv encoder and an MLP decoder, as the embedded `digits`
    affords on a CPU; two conv layers so that 28 px halves cleanly (28 -> 14 -> 7). The stroke
    is the one thing far from the background's median colour: the background-contrast channel
    hands networks and judges the digit whatever the texture."""
    return [ImageModality(f"m{m}", (3, SIDE, SIDE), arch="conv", decoder_arch="mlp",
                          channels=(32, 64), background_contrast=True) for m in range(M)]


class PolyDigits(CountedModalities):
    name = "polydigits"
    former_names = ("polymnist",)
    description = (f"M image modalities (option modalities: 2..{MAX_MODALITIES}, default 5) of scikit-learn's "
                   "digits on different backgrounds, PolyMNIST-style (generated; not PolyMNIST)")
    num_classes = 10
    defaults = dict(latent_dim=20, K=1, epochs=5, batch_size=128, lr=1e-3)
    options = (
        Option("modalities", 5, f"M, the number of image modalities (2 to {MAX_MODALITIES})", low=2, high=MAX_MODALITIES),
        Option("partners", 20, "tuples each item appears in (20, as MMVAE pairs MNIST-SVHN)", low=1),
        Option("per_class", None, "source digits kept per class (default all, about 180; small values make quick tests)",
               type=int, low=5),
    )

    def build_modalities(self, M: int):
        return image_modalities(M)

    @property
    def partners(self) -> int:
        return self.option_values["partners"]

    @property
    def per_class(self) -> int | None:
        return self.option_values["per_class"]

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        per_class = "all" if self.per_class is None else self.per_class
        path = (Path(data_dir) / "polydigits" /
                f"polydigits-v{VERSION}-M{self.num_modalities}-partners{self.partners}-perclass{per_class}.pt")
        return load_cached(path, self._build)

    def recorded(self, data_info: dict) -> bool:
        """A run.json's ``data`` written by this construction (under its former name too): its
        seed and the background styles only this construction records."""
        return data_info.get("seed") == SEED and "styles" in data_info

    def _sources(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images8, labels = bunch.images, bunch.target.astype(np.int64)
        source = np.arange(len(labels))
        if self.per_class is not None:
            rng = np.random.default_rng([SEED, 1])
            keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:self.per_class]
                                           for c in range(10)]))
            images8, labels, source = images8[keep], labels[keep], keep
        return images8, labels, source

    def _build(self) -> PairedData:
        images8, labels, source = self._sources()
        train_ids, test_ids = stratified_split(labels, TEST_FRACTION, np.random.default_rng(SEED))
        splits = []
        for s, ids in enumerate((train_ids, test_ids)):
            y = torch.as_tensor(labels[ids])
            # Each modality draws from its own stream: its pool does not depend on M.
            pools = {m.name: render(images8[ids], k, np.random.default_rng([SEED, s, k]))
                     for k, m in enumerate(self._modalities)}
            columns = group_by_class([y] * self.num_modalities, self.partners,
                                     np.random.default_rng([SEED, s, self.num_modalities, self.partners]))
            splits.append(Split(pools=pools, pool_labels={name: y for name in pools},
                                index=torch.stack(columns, dim=1), labels=y[columns[0]]))
        info = {"source_ids": {"train": source[train_ids].tolist(), "test": source[test_ids].tolist()},
                "modalities": self.num_modalities, "styles": list(STYLES[:self.num_modalities]),
                "partners": self.partners, "per_class": self.per_class, "seed": SEED, "version": VERSION}
        return PairedData(*splits, info=info)


@hookimpl
def register_datasets(register):
    register(PolyDigits())
