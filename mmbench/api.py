"""The base classes a plugin subclasses: Modality, Dataset, Posterior, Metric — and Option,
the declaration of a setting a plugin owns.

The core only ever talks to these interfaces; it never names a concrete plugin.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from .errors import MMBenchError, Unsupported
from .model import MultimodalVAE

__all__ = ["Option", "Configurable", "Modality", "Split", "PairedData", "Dataset", "ObjectiveResult",
           "Posterior", "MetricValue", "Metric", "MultimodalVAE", "Unsupported", "MMBenchError"]


# --------------------------------------------------------------------------- options
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Option:
    """One setting a plugin owns, declared once: its name, default, help and valid values.

    The type is the default's unless given. ``parse`` turns a user's value (a string from the
    command line, or a TOML value) into that type and checks the range, with an error a person
    can act on."""

    name: str
    default: Any
    help: str
    type: type | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None

    @property
    def kind(self) -> type:
        return self.type or type(self.default)

    def parse(self, value: Any, owner: str = "") -> Any:
        label = f"{owner}.{self.name}" if owner else self.name
        kind = self.kind
        if value is None and self.default is None:
            return None
        if isinstance(value, str) and kind is not str:
            text = value.strip().lower()
            try:
                if kind is bool:
                    if text not in _TRUE | _FALSE:
                        raise ValueError(text)
                    value = text in _TRUE
                else:
                    value = kind(value)
            except ValueError:
                raise MMBenchError(f"{label} takes a {kind.__name__} (got {value!r}): {self.help}") from None
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise MMBenchError(f"{label} takes a {kind.__name__} (got {value!r}): {self.help}")
        if self.choices is not None and value not in self.choices:
            raise MMBenchError(f"{label} must be one of {', '.join(map(str, self.choices))} (got {value!r})")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            bounds = f"{'' if self.low is None else self.low} .. {'' if self.high is None else self.high}".strip()
            raise MMBenchError(f"{label} must be in {bounds} (got {value!r}): {self.help}")
        return value


class Configurable:
    """A plugin that declares ``options``; ``configure`` returns a copy with values set, and
    ``option_values`` holds every declared option's value (the default where none was given)."""

    name: str
    options: tuple[Option, ...] = ()

    @property
    def option_values(self) -> dict[str, Any]:
        given = self.__dict__.get("_configured", {})
        return {o.name: given.get(o.name, o.default) for o in self.options}

    def configure(self, **values) -> "Configurable":
        declared = {o.name: o for o in self.options}
        for key in values:
            if key not in declared:
                close = difflib.get_close_matches(key, declared, n=1)
                hint = (f"; did you mean '{close[0]}'?" if close else
                        f"; it has {', '.join(declared)}" if declared else "; it declares none")
                raise MMBenchError(f"'{getattr(self, 'name', type(self).__name__)}' has no option '{key}'{hint}")
        parsed = {k: declared[k].parse(v, getattr(self, "name", "")) for k, v in values.items()}
        configured = copy.copy(self)
        configured._configured = {**self.__dict__.get("_configured", {}), **parsed}
        return configured


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


class Posterior(Configurable):
    """How unimodal experts combine into a joint posterior, the objective that trains them,
    and the model (networks, latent layout) it trains: ``build_model``."""

    name: str
    description: str = ""
    #: the latent family of the experts and the prior (a mmbench.distributions.LatentFamily)
    family: Any = None
    #: gradient estimators this objective offers; the first is the default
    estimators: tuple[str, ...] = ("reparam",)

    def build_model(self, modalities: list[Modality], latent_dim: int) -> nn.Module:
        """The networks this posterior trains, implementing the model contract of
        :mod:`mmbench.model` (prior, condition, cross_latents, represent, decode,
        log_likelihood, latents_decoded). The default: one encoder and decoder per modality
        over one shared latent, fused by this posterior's ``condition``."""
        return MultimodalVAE(modalities, latent_dim, self.family, fusion=self)

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


class Metric(Configurable):
    """Evaluates a trained model; declares the criterion it serves and how to read it.

    It reads the model only through the model contract (``ctx.model.prior``, ``condition``,
    ``cross_latents``, ``represent``, ``decode``, ``log_likelihood``); a model that cannot give
    what it needs raises :class:`Unsupported`, and the metric is skipped with that reason."""

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
