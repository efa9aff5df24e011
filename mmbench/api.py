"""The base classes a plugin subclasses: Modality, Dataset, Posterior, Metric, Artifact, Tracker,
Executor — and Option, the declaration of a setting a plugin owns.

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
           "Posterior", "MetricValue", "Metric", "Artifact", "Tracker", "Executor", "MultimodalVAE", "Unsupported",
           "MMBenchError"]


# --------------------------------------------------------------------------- options
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Option:
    """One setting a plugin owns, declared once: its name, default, help and valid values.

    The type is the default's unless given. ``parse`` turns a user's value (a string from the
    command line, or a TOML value) into that type and checks the range, with an error a person
    can act on. ``many``: a list of such values (comma-separated on the command line).
    ``aliases``: names the setting had before its owner declared it (a flag ``--eval-items``,
    a grid-file key, a run.json key of older runs), each read as this option."""

    name: str
    default: Any
    help: str
    type: type | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    many: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def kind(self) -> type:
        if self.type is not None:
            return self.type
        sample = self.default[0] if self.many and self.default else self.default
        return type(sample) if sample is not None else str

    def describe(self) -> str:
        """What values it takes, in words: 'a positive integer', 'a list of names', ..."""
        kind = self.kind
        word = ("a positive integer" if kind is int and self.low == 1 and self.high is None
                else _KIND_WORDS.get(kind, f"a {kind.__name__}"))
        if self.many:
            return f"a list of {word.removeprefix('a ').removeprefix('an ')}s"
        return word

    def parse(self, value: Any, owner: str = "") -> Any:
        label = f"{owner}.{self.name}" if owner else self.name
        if value is None and self.default is None:
            return None
        if not self.many:
            return self._parse_one(value, label)
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        if not items:
            raise MMBenchError(f"{label} takes {self.describe()}, e.g. a,b (got {value!r}): {self.help}")
        return [self._parse_one(v, label) for v in items]

    def _parse_one(self, value: Any, label: str) -> Any:
        kind = self.kind
        bad = MMBenchError(f"{label} takes {self.describe()} (got {value!r}): {self.help}")
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
                raise bad from None
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise bad
        if self.choices is not None and value not in self.choices:
            raise MMBenchError(f"{label} must be one of {', '.join(map(str, self.choices))} (got {value!r})")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            if self.low == 1 and self.high is None and kind is int:
                raise bad
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

    @property
    def changed_options(self) -> dict[str, Any]:
        """The option values that differ from their declared defaults: what a run's spec keeps."""
        return {o.name: value for o, value in zip(self.options, self.option_values.values()) if value != o.default}

    def parse_options(self, values: dict) -> dict[str, Any]:
        """``values`` checked against the declarations and parsed; an unknown name or a bad value
        raises MMBenchError (with did-you-mean)."""
        declared = {o.name: o for o in self.options}
        for key in values:
            if key not in declared:
                close = difflib.get_close_matches(key, declared, n=1)
                hint = (f"; did you mean '{close[0]}'?" if close else
                        f"; it has {', '.join(declared)}" if declared else "; it declares none")
                raise MMBenchError(f"'{getattr(self, 'name', type(self).__name__)}' has no option '{key}'{hint}")
        return {k: declared[k].parse(v, getattr(self, "name", "")) for k, v in values.items()}

    def configure(self, **values) -> "Configurable":
        parsed = self.parse_options(values)
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

    def judge_features(self, x: Tensor) -> Tensor:
        """What the second coherence judge (random features and a ridge read-out, not a
        network of this modality's) reads of x[B, *shape]: [B, F] floats. By default the
        ``features`` map, else the flattened observation."""
        features = self.features(x)
        return features if features is not None else x.flatten(1).to(torch.get_default_dtype())

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
    """A dataset's two splits as loaded. ``info`` is recorded in every run.json (sources, seeds,
    versions); ``derived`` holds what loading derived from the files that the modalities need
    (a vocabulary, a render gallery), for :meth:`Dataset.modalities_for`: it is neither recorded
    nor part of the fingerprint."""

    train: Split
    test: Split
    info: dict = field(default_factory=dict)
    derived: dict = field(default_factory=dict)

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
        return PairedData(self.train.to(device), self.test.to(device), self.info, self.derived)


class Dataset(Configurable):
    """A named, paired set of modalities with train/test splits and the paper's defaults.

    Its ``options`` (e.g. a modality count) are set with ``--set NAME.OPTION=VALUE`` or
    ``--data-option OPTION=VALUE``; ``configure`` returns the configured copy."""

    name: str
    description: str = ""
    num_classes: int = 10
    #: hyper-parameters a run uses unless the user overrides them
    defaults: dict = {}
    #: True: part of a grid whose datasets the user does not name
    by_default: bool = False
    #: at most this many optimisation steps for each modality's first-family (network) judge;
    #: None: the recipe's epochs whatever the pool's size. For a pool of many renderings of few
    #: sources (digits' colour, since version 2), where 40 epochs cost minutes and teach nothing new.
    judge_steps: int | None = None
    #: names this dataset was registered under before; runs recorded under one of them whose
    #: data ``recorded`` recognises are read as this dataset's (mmbench.renames)
    former_names: tuple[str, ...] = ()

    def recorded(self, data_info: dict) -> bool:
        """Whether a run.json's ``data`` (this dataset's ``PairedData.info`` when it ran) was
        written by this dataset under one of its ``former_names``."""
        return False

    @property
    def modalities(self) -> list[Modality]:
        """The modalities as declared, before any data is loaded (what ``mmbench plugins``
        describes). Models and metrics use :meth:`modalities_for` the loaded data."""
        raise NotImplementedError

    def modalities_for(self, data: PairedData) -> list[Modality]:
        """The modalities of ``data`` (what :meth:`load` returned), in the order of its index
        columns: what a model is built from and metrics read. A dataset whose modalities depend
        on its files (a vocabulary of the training captions) builds them here from
        ``data.derived``, never by changing itself while loading, so that a run evaluated in a
        fresh process gets the same modalities. The default: :attr:`modalities`."""
        return self.modalities

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        """The data, obtained from ``data_dir`` (fetched first when ``download``).

        The data never depends on a run's seed: every run of a grid sees the same pairs. It
        leaves the dataset as it was: what the modalities learn from the files goes into the
        returned ``PairedData.derived``, for :meth:`modalities_for`."""
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
    #: True: part of a grid whose posteriors the user does not name
    by_default: bool = False
    #: True when ``objective``'s loss and bound are means over the batch's items of per-item
    #: terms, each drawn from its own item alone (no weight, normalisation, divergence or
    #: stratification of draws spans two items): a training step may then be computed in item
    #: chunks whose gradients add up to the batch's (mmbench.step), unless the model's networks
    #: couple items themselves (batch normalisation).
    items_independent: bool = False

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


# --------------------------------------------------------------------------- artifacts
class Artifact(Configurable):
    """Files written beside a trained run for a person to look at (PNG, JSON, HTML): pictures
    of samples, a report. It reads the model through the same :class:`EvalContext` metrics get
    and yields no numbers; the runner lists what it wrote in run.json (``artifacts``) and the
    leaderboard links it. An artifact that raises is reported and never fails the run."""

    name: str
    description: str = ""

    def skip_reason(self, ctx) -> str | None:
        """Why this artifact cannot be made on ctx's dataset or model, or None when it can."""
        return None

    def write(self, ctx, folder: Path) -> list[Path]:
        """Write the files into ``folder`` (``<run_dir>/artifacts/<name>/``, made empty for it)
        and return their paths. Write each atomically (``mmbench.results.atomic_write_bytes``)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- trackers
class Tracker(Configurable):
    """Follows runs in an experiment tracker (TensorBoard, MLflow, ...), picked with
    ``mmbench run --tracker NAME``; none by default. A configured copy serves one run and may
    keep state on itself: ``start``, then ``log_epoch`` after each epoch, ``log_metrics`` and
    ``log_artifact`` once evaluated, and ``finish``. A tracker that raises is reported on stderr
    and in run.json (``tracker_errors``), is not called again in that run, and never fails it."""

    name: str
    description: str = ""

    def unavailable(self) -> str | None:
        """Why this tracker cannot run here (a package that is not installed, with the command
        that installs it), or None. Checked before a grid creates anything."""
        return None

    def start(self, run_info: dict) -> None:
        """A run begins (or resumes): ``run_info`` holds ``run_dir`` (where files of the run may
        go), ``name`` (``<dataset>/<posterior>/seed-<n>``), ``spec``, ``resolved_hparams``,
        ``options``, ``provenance`` and ``data``, as run.json records them."""

    def log_epoch(self, epoch: int, values: dict) -> None:
        """One epoch finished (1-based): ``values`` as run.json's ``history`` holds it for the
        epoch — ``bound`` (the training bound, per item), ``seconds``, ``step_ms``,
        ``decoder_passes``. A resumed run logs its earlier epochs again first."""

    def log_metrics(self, rows: list[dict]) -> None:
        """The evaluated run's metrics.jsonl rows (``metric``, ``value``, ``family``, ``unit``, ...)."""

    def log_artifact(self, path: Path) -> None:
        """A file an artifact wrote (an absolute path inside the run directory)."""

    def finish(self, status: str) -> None:
        """The run ended with ``status`` (``done`` or ``failed``), as run.json will say."""


# --------------------------------------------------------------------------- executors
class Executor(Configurable):
    """Carries out a grid: ``run(cells, job, plugins)`` returns one run.json record per cell,
    in the order of ``cells``. A cell that another runner holds is waited for, never run twice.
    Each cell runs through :func:`mmbench.grid.run_cell`, which takes the cell's lock and
    writes its run directory."""

    name: str
    description: str = ""
    #: True: the executor of a grid that names none
    by_default: bool = False

    def run(self, cells: list, job, plugins) -> list[dict]:
        raise NotImplementedError
