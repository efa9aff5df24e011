"""``cub``: Caltech-UCSD Birds images with their captions, the MMVAE paper's image–language
benchmark (§4.3). Each image comes with 10 captions (Reed et al. 2016) and forms 10 pairs, one
per caption. Images enter as 2048-d ResNet-101 features (Laplace likelihood, an MLP
2048-1024-512-256-D each way, Appendix F); captions as at most 32 tokens over the words seen
more than 3 times in the training captions (categorical likelihood, convolutional sentence
networks over learnt word embeddings). For a person, a generated feature vector is shown as
its nearest training image, a generated caption as its words.

What the modalities learn from the files — the vocabulary, the training images a feature
vector is shown as — is derived by ``load`` into the data (``PairedData.derived``) and the
modalities are built from it by ``modalities_for(data)``: the dataset itself never changes,
so a run evaluated in a fresh process builds the model it trained.

The captions' likelihood is weighted 1 and the features' by 32/2048 (tokens per caption over
feature dimensions), the balance the paper's released code applies (its ``llik_scaling``), as
λ_MNIST balances MNIST against SVHN. Defaults are the paper's: D = 128, K = 50, batch 64,
50 epochs.

Reference: Shi, Siddharth, Paige & Torr, NeurIPS 2019, §4.3, Table 4 and Appendix F; Wah et
al., "The Caltech-UCSD Birds-200-2011 Dataset", 2011; Reed et al., "Learning Deep
Representations of Fine-Grained Visual Descriptions", CVPR 2016.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mmbench import hookimpl
from mmbench.api import Dataset, Modality, Option, PairedData, Split
from mmbench.distributions import laplace_log_prob
from mmbench.errors import DataError, MMBenchError
from mmbench.modalities import PosteriorHead
from mmbench.published import register_folder

from . import features, files
from .text import MAX_LEN, MIN_COUNT, CaptionModality, build_vocab

CAPTIONS_PER_IMAGE = 10
#: the fixed scale of the features' Laplace likelihood, as in the paper's released code
FEATURE_SCALE = 0.01
RENDER_SIDE = 128


class FeatureModality(Modality):
    """Fixed-length feature vectors with a Laplace likelihood of fixed scale; MLPs whose widths
    halve from the input (2048-1024-512-256-D, MMVAE Appendix F) with ELU activations.

    ``gallery`` (training features and the images they came from) lets :meth:`render` show a
    generated vector as its nearest training image."""

    def __init__(self, name: str, size: int = features.FEATURES, *, hidden=(1024, 512, 256),
                 scale: float = FEATURE_SCALE, weight: float = 1.0, gallery: tuple[Tensor, list[Path]] | None = None):
        self.name, self.shape, self.hidden = name, (size,), tuple(hidden)
        self.scale, self.weight = scale, weight
        self.gallery = gallery

    def describe(self):
        widths = "-".join(str(w) for w in (self.shape[0], *self.hidden))
        return (f"{self.name} ({self.shape[0]},) ResNet-101 features, Laplace(scale {self.scale}), "
                f"λ={self.weight:.3g}, MLP {widths}-D")

    def encoder(self, latent_dim):
        layers, width = [], self.shape[0]
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        return nn.Sequential(*layers, PosteriorHead(width, latent_dim))

    def decoder(self, latent_dim):
        layers, width = [], latent_dim
        for h in reversed(self.hidden):
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, self.shape[0]))

    def log_likelihood(self, out, x):
        return laplace_log_prob(x, out, self.scale).sum(-1)

    def decode_mean(self, out):
        return out

    def nearest(self, x: Tensor) -> Tensor:
        """Indices of the training items nearest (Euclidean) to each vector of x [B, F]."""
        if self.gallery is None:
            raise MMBenchError(f"'{self.name}' shows a vector as its nearest training image: render with the "
                               "modalities of the loaded data, dataset.modalities_for(data)")
        bank = self.gallery[0].to(x.device, x.dtype)
        return torch.cdist(x.reshape(-1, self.shape[0]), bank).argmin(-1)

    def render(self, x: Tensor):
        from PIL import Image

        path = self.gallery[1][int(self.nearest(x.detach())[0])] if self.gallery else None
        if path is None:
            self.nearest(x)  # raises the explanation
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((RENDER_SIDE, RENDER_SIDE)))


class Cub(Dataset):
    name = "cub"
    description = ("CUB-200-2011 birds: ResNet-101 image features ↔ captions, 10 pairs per image "
                   "(MMVAE §4.3; files under --data-dir/cub)")
    num_classes = 200
    defaults = dict(latent_dim=128, K=50, epochs=50, batch_size=64, lr=1e-3)
    options = (
        Option("weights", "imagenet", "the ResNet-101's weights: imagenet (torchvision's pretrained, the default) "
               "or none (untrained, for tests)", choices=features.WEIGHTS),
        Option("image_size", 224, "the crop fed to the ResNet, in pixels", low=32),
    )

    @staticmethod
    def _modalities_from(vocab: list[str] | None = None, gallery=None) -> list[Modality]:
        return [FeatureModality("image", weight=MAX_LEN / features.FEATURES, gallery=gallery),
                CaptionModality("caption", vocab=vocab)]

    def __init__(self):
        self._declared = self._modalities_from()

    @property
    def modalities(self):
        """As declared: the caption's vocabulary is that of the files, known once loaded."""
        return self._declared

    def modalities_for(self, data: PairedData) -> list[Modality]:
        """The caption modality with the vocabulary of the training captions, the image modality
        with its gallery (the training features and their image files): what ``load`` derived."""
        derived = data.derived
        if "vocab" not in derived:
            raise MMBenchError("these data were not loaded by the 'cub' dataset (no vocabulary derived)")
        return self._modalities_from(derived["vocab"], (data.train.pools["image"], derived["gallery"]))

    @property
    def weights(self) -> str:
        return self.option_values["weights"]

    @property
    def image_size(self) -> int:
        return self.option_values["image_size"]

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        if download:
            raise DataError(f"--download cannot fetch CUB; {files.FETCH_HINT} (under {Path(data_dir).resolve() / 'cub'})")
        layout = files.locate(data_dir, self.name)
        names = {"train": layout.train, "test": layout.test}
        classes = sorted({files.class_of(n) for n in layout.train + layout.test})
        if len(classes) > self.num_classes:
            raise DataError(f"CUB has {self.num_classes} classes; the split names {len(classes)}")
        class_id = {c: i for i, c in enumerate(classes)}
        captions = {s: [c for n in names[s] for c in files.read_captions(layout, n, CAPTIONS_PER_IMAGE)] for s in names}
        every = layout.train + layout.test
        paths = [files.image_path(layout, n) for n in every]
        feats = features.cached_features(layout.root, every, paths, self.weights, self.image_size)
        feats = {"train": feats[:len(layout.train)], "test": feats[len(layout.train):]}
        vocab = build_vocab(captions["train"], MIN_COUNT)
        caption = CaptionModality("caption", vocab=vocab)  # to tokenise with
        splits = []
        for s in ("train", "test"):
            y = torch.tensor([class_id[files.class_of(n)] for n in names[s]], dtype=torch.int64)
            n = len(names[s])
            # pair (image i, its caption j) for each of its captions, caption rows in file order
            index = torch.stack([torch.arange(n).repeat_interleave(CAPTIONS_PER_IMAGE),
                                 torch.arange(n * CAPTIONS_PER_IMAGE)], dim=1)
            splits.append(Split(pools={"image": feats[s], "caption": caption.tokenise_all(captions[s])},
                                pool_labels={"image": y, "caption": y.repeat_interleave(CAPTIONS_PER_IMAGE)},
                                index=index, labels=y[index[:, 0]]))
        info = {"split": layout.split_source, "images": {s: len(names[s]) for s in names}, "classes": len(classes),
                "vocab_size": len(caption.vocab), "max_len": MAX_LEN, "min_count": MIN_COUNT,
                "features": f"resnet101 ({self.weights} weights, {self.image_size}px)"}
        return PairedData(*splits, info=info, derived={"vocab": vocab, "gallery": paths[:len(layout.train)]})


@hookimpl
def register_datasets(register):
    register(Cub())


@hookimpl
def register_published(register):
    register_folder(register, Path(__file__).with_name("published"))  # the papers' numbers on this dataset
