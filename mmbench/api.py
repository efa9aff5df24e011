"""The base classes a plugin subclasses: Modality, Dataset, Posterior, Metric.

The core only ever talks to these interfaces; it never names a concrete plugin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from .errors import MMBenchError


# --------------------------------------------------------------------------- modalities
class Modality:
    """One kind of observation: its shape, networks, likelihood, judge and rendering."""

    name: str
    shape: tuple[int, ...]
    #: λ, the weight of this modality's log-likelihood in the training objective.
    weight: float = 1.0

    def encoder(self, latent_dim: int) -> nn.Module:
        """A network x[B, *shape] -> raw posterior parameters [B, 2·latent_dim]."""
        raise NotImplementedError

    def decoder(self, latent_dim: int) -> nn.Module:
        """A network z[N, latent_dim] -> likelihood parameters for N items."""
        raise NotImplementedError

    def log_likelihood(self, out: Tensor, x: Tensor) -> Tensor:
        """log p(x | z) summed over the event: out [..., B, ...] against x [B, ...] -> [..., B]."""
        raise NotImplementedError

    def decode_mean(self, out: Tensor) -> Tensor:
        """The decoder's most representative output (mean image, argmax tokens), shaped like x."""
        raise NotImplementedError

    def classifier(self, num_classes: int) -> nn.Module | None:
        """The coherence judge's network x -> logits, or None when the modality has no labels."""
        return None

    def render(self, x: Tensor) -> Any:
        """A single item as a person sees it: an [H, W, 3] uint8 array or a string."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor | None:
        """A fixed feature map x[B, *shape] -> [B, F] for image–language CCA (MMVAE Table 4
        uses ResNet-101 features for CUB images), or None when the metric should use the
        flattened observation itself."""
        return None

    def describe(self) -> str:
        return f"{self.name} {tuple(self.shape)}"


# --------------------------------------------------------------------------- datasets
@dataclass
class Split:
    """One split of a paired dataset, resident in tensors.

    ``pools[m]`` holds the distinct items of modality m; ``index`` [N, M] says which pool item
    of each modality forms pair n (columns in the dataset's modality order); ``labels`` [N]
    is the shared class of each pair and ``pool_labels[m]`` the class of each pool item.
    """

    pools: dict[str, Tensor]
    pool_labels: dict[str, Tensor]
    index: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.index.shape[0]

    def batch(self, rows: Tensor, names: list[str]) -> list[Tensor]:
        """The items of pairs ``rows`` for each modality in ``names`` (a gather, no copy loop)."""
        return [self.pools[n][self.index[rows, j]] for j, n in enumerate(names)]

    def to(self, device) -> "Split":
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return Split(move(self.pools), move(self.pool_labels), self.index.to(device), self.labels.to(device))


@dataclass
class PairedData:
    train: Split
    test: Split
    info: dict = field(default_factory=dict)

    def fingerprint(self, pairs: bool = True) -> str:
        """A content hash of the data (the pools, their labels, and the pairing unless
        ``pairs`` is False): judges and caches are keyed by it."""
        h = hashlib.sha256()
        for split in (self.train, self.test):
            for name in sorted(split.pools):
                h.update(name.encode())
                h.update(split.pools[name].cpu().numpy().tobytes())
                h.update(split.pool_labels[name].cpu().numpy().tobytes())
            if pairs:
                h.update(split.index.cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def to(self, device) -> "PairedData":
        return PairedData(self.train.to(device), self.test.to(device), self.info)


class Dataset:
    """A named, paired set of modalities with train/test splits and the paper's defaults."""

    name: str
    description: str = ""
    num_classes: int = 10
    #: hyper-parameters a run uses unless the user overrides them
    defaults: dict = {}

    @property
    def modalities(self) -> list[Modality]:
        raise NotImplementedError

    def configure(self, **options) -> "Dataset":
        """A copy of this dataset with user options applied (e.g. a modality count)."""
        if options:
            raise MMBenchError(f"dataset '{self.name}' takes no options (got {', '.join(options)})")
        return self

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        """The data, obtained from ``data_dir`` (fetched first when ``download``).

        The data never depends on a run's seed: every run of a grid sees the same pairs."""
        raise NotImplementedError


# --------------------------------------------------------------------------- posteriors
@dataclass
class ObjectiveResult:
    """What one training step's objective produced.

    ``loss`` is what gets differentiated (a surrogate for DReG); ``bound`` is the value of the
    bound itself, per batch item averaged, which is what gets logged."""

    loss: Tensor
    bound: Tensor
    decoder_passes: float


class Posterior:
    """How unimodal experts combine into a joint posterior, and the objective that trains them."""

    name: str
    description: str = ""
    #: the latent family of the experts and the prior (a mmbench.distributions.LatentFamily)
    family: Any = None
    #: gradient estimators this objective offers; the first is the default
    estimators: tuple[str, ...] = ("reparam",)

    def decoder_passes(self, num_modalities: int) -> int:
        """Declared cost: decoder passes per step, one pass = one decoder on K·B latents."""
        raise NotImplementedError

    def objective(self, model, xs: list[Tensor], K: int, estimator: str) -> ObjectiveResult:
        raise NotImplementedError

    def condition(self, model, experts: list, observed: list[int]):
        """The joint posterior given the observed modalities' experts (a Factorised/Mixture)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- metrics
@dataclass
class MetricValue:
    name: str
    value: float
    #: how the value was obtained (e.g. items and samples of an estimate), kept beside it
    details: dict | None = None


class Metric:
    """Evaluates a trained model; declares the criterion it serves and how to read it."""

    name: str
    criterion: str = ""
    higher_is_better: bool = True
    unit: str = ""
    description: str = ""

    def skip_reason(self, ctx) -> str | None:
        """Why this metric cannot run on ctx's dataset, or None when it can."""
        return None

    def evaluate(self, ctx) -> Iterable[MetricValue]:
        raise NotImplementedError
