"""Conformance checks a plugin author runs in their own tests, and the suite runs over every
plugin it loads.

    from mmbench.testing import check_artifact, check_dataset, check_metric, check_posterior, check_tracker, tiny_context

    def test_my_posterior():
        check_posterior(MyPosterior())          # bound finite, loss differentiable, cost as declared

    def test_my_metric():
        check_metric(MyMetric(), tiny_context(MyPosterior()))

    def test_my_artifact(tmp_path):
        check_artifact(MyArtifact(), tiny_context(MyPosterior(), run_dir=tmp_path))

    def test_my_tracker(tmp_path):
        check_tracker(MyTracker(), tmp_path)    # every call of a run, in order

Each check collects every problem it finds and raises one :class:`ConformanceError` (an
``AssertionError``, so pytest shows it as a failed assertion) listing them, or returns what it
measured. The checks need no data beyond what scikit-learn bundles: :class:`ToyDataset` is a
small real paired dataset (the 8×8 digits, one rotation per modality) to train tiny models on.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .api import (Artifact, Dataset, Metric, MetricValue, Modality, ObjectiveResult, Option, PairedData, Posterior,
                  Split, Tracker)
from .datasets import stratified_split
from .distributions import LatentFamily
from .errors import MMBenchError
from .evaluation import EvalContext
from .modalities import ImageModality, TextModality
from .model import items_view
from .train import TrainConfig, train

#: a metric value's name: ``family`` or ``family[detail]`` (e.g. ``coherence_cross[a->b]``)
METRIC_NAME = re.compile(r"[A-Za-z0-9_.\-]+(\[[^\[\]\s]+\])?")


class ConformanceError(AssertionError):
    """A plugin breaks the contract of its base class; the message lists every problem."""


class _Problems:
    def __init__(self, what: str):
        self.what, self.items = what, []

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.items.append(message)
        return ok

    def raise_if_any(self) -> None:
        if self.items:
            raise ConformanceError(f"{self.what} does not conform:\n" + "\n".join(f"  - {p}" for p in self.items))


def _check_options(p: "_Problems", item) -> None:
    """Its ``options``: Option declarations with distinct plain names (a user writes
    OWNER.NAME) whose defaults their own checks accept."""
    options = getattr(item, "options", ())
    if not p.check(isinstance(options, tuple) and all(isinstance(o, Option) for o in options),
                   "`options` is not a tuple of mmbench.api.Option"):
        return
    names = [o.name for o in options]
    p.check(len(set(names)) == len(names), f"option names are repeated: {names}")
    for option in options:
        p.check(isinstance(option.name, str) and option.name.isidentifier(),
                f"option name {option.name!r} is not a plain identifier (it is written OWNER.NAME)")
        try:
            option.parse(option.default, getattr(item, "name", ""))
        except MMBenchError as exc:
            p.check(False, f"option {option.name}'s default {option.default!r} fails its own check: {exc}")


def _declares(obj, base: type, attribute: str) -> bool:
    """Whether ``attribute`` is set by obj or a subclass of ``base``, not inherited from base."""
    return attribute in vars(obj) or any(attribute in vars(c) for c in type(obj).__mro__ if c is not base
                                         and issubclass(c, base))


# ----------------------------------------------------------------------------- a toy dataset
class ToyDataset(Dataset):
    """A small real paired dataset for plugin tests: scikit-learn's bundled 8×8 digits.

    Modality k shows a digit rotated by k·90°; a pair holds *different* digits of one class
    (the class is the shared content, the handwriting private), as MMVAE pairs MNIST with SVHN.
    With ``caption``, a last modality names the first image's digit in words ("the digit
    three"), for metrics that need text. ``per_class`` source digits per class are kept, a
    fifth of them for the test split."""

    name = "toy"
    description = "scikit-learn's 8×8 digits, one rotation per modality (for plugin tests)"
    num_classes = 10
    defaults = dict(latent_dim=8, K=1, epochs=1, batch_size=64, lr=1e-3)
    WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

    def __init__(self, num_modalities: int = 2, per_class: int = 30, seed: int = 0, caption: bool = False):
        self.num_modalities, self.per_class, self.seed, self.caption = num_modalities, per_class, seed, caption
        self._modalities = [ImageModality(f"rot{90 * k}", (1, 8, 8), arch="mlp", hidden=64)
                            for k in range(num_modalities)]
        if caption:
            vocab = ["<pad>", "<eos>", "the", "digit", *self.WORDS]
            self._modalities.append(TextModality("caption", vocab, 4, embed=16, hidden=64))

    @property
    def modalities(self):
        return self._modalities

    def load(self, data_dir=None, download: bool = False) -> PairedData:
        """Built in memory (well under a second); ``data_dir`` is not used."""
        return _toy_data(self.num_modalities, self.per_class, self.seed, self.caption)

    def _build(self) -> PairedData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        rng = np.random.default_rng(self.seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(bunch.target == c))[:self.per_class]
                               for c in range(self.num_classes)])
        images = torch.as_tensor(bunch.images[keep], dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.as_tensor(bunch.target[keep], dtype=torch.int64)
        train_ids, test_ids = stratified_split(labels.numpy(), 0.2, rng)
        return PairedData(*(self._split(images[ids], labels[ids], rng) for ids in (train_ids, test_ids)),
                          info={"per_class": self.per_class, "seed": self.seed})

    def _split(self, images: Tensor, labels: Tensor, rng: np.random.Generator) -> Split:
        by_class = {int(c): np.flatnonzero(labels.numpy() == c) for c in labels.unique()}
        anchor = np.arange(len(labels))  # each item of the first modality once, with random partners
        columns = [anchor] + [np.array([rng.choice(by_class[int(labels[i])]) for i in anchor])
                              for _ in range(1, self.num_modalities)]
        images_of = self._modalities[:self.num_modalities]
        pools = {m.name: torch.rot90(images, k, dims=(-2, -1)).contiguous() for k, m in enumerate(images_of)}
        if self.caption:  # the caption of each first-modality item
            text = self._modalities[-1]
            pools[text.name] = torch.tensor([text.tokenise(f"the digit {self.WORDS[int(c)]}") for c in labels])
            columns.append(anchor)
        return Split(pools=pools, pool_labels={m.name: labels for m in self._modalities},
                     index=torch.as_tensor(np.stack(columns, 1)), labels=labels[anchor])


@functools.lru_cache(maxsize=8)
def _toy_data(num_modalities: int, per_class: int, seed: int, caption: bool) -> PairedData:
    return ToyDataset(num_modalities, per_class, seed, caption)._build()


# ----------------------------------------------------------------------------- posteriors
def check_posterior(posterior: Posterior, *, modality_counts=(2, 3), K: int = 2, batch: int = 6,
                    latent_dim: int = 4, seed: int = 0) -> dict[int, float]:
    """A posterior's contract, on tiny models of ``ToyDataset`` for each modality count M:

    - it has a name, a description, a latent family and at least one estimator, and its
      ``options`` are well declared (as :func:`check_metric` says);
    - with every estimator, ``objective`` returns an ObjectiveResult whose bound is a finite
      scalar and whose loss is a finite scalar that reaches every encoder and decoder with finite
      gradients;
    - the decoder passes it reports, and the passes counted on the model (latents decoded ÷ K·B),
      equal its declared ``decoder_passes(M)``;
    - ``condition`` gives, for each single modality and for all of them, a distribution whose
      mean is [B, D], whose samples are [n, B, D] and whose log-density there is finite.

    Returns {M: decoder passes counted}."""
    p = _Problems(f"posterior {getattr(posterior, 'name', posterior)!r}")
    p.check(isinstance(posterior, Posterior), "is not a mmbench.api.Posterior")
    p.check(isinstance(getattr(posterior, "name", None), str) and bool(posterior.name), "has no `name`")
    p.check(isinstance(posterior.description, str) and bool(posterior.description), "has no `description`")
    p.check(isinstance(posterior.family, LatentFamily), "its `family` is not a mmbench.distributions.LatentFamily")
    p.check(bool(posterior.estimators) and all(isinstance(e, str) for e in posterior.estimators),
            "declares no `estimators` (a tuple of names; the first is the default)")
    _check_options(p, posterior)
    p.raise_if_any()

    counted: dict[int, float] = {}
    for M in modality_counts:
        dataset = ToyDataset(M)
        data = dataset.load()
        torch.manual_seed(seed)
        model = posterior.build_model(dataset.modalities, latent_dim)
        xs = data.train.batch(torch.arange(batch), model.names)
        declared = posterior.decoder_passes(M)
        for estimator in posterior.estimators:
            where = f"M={M}, estimator {estimator!r}"
            model.zero_grad(set_to_none=True)
            before = model.latents_decoded
            result = posterior.objective(model, xs, K, estimator)
            passes = (model.latents_decoded - before) / (K * batch)
            counted[M] = passes
            if not p.check(isinstance(result, ObjectiveResult), f"{where}: objective returned "
                           f"{type(result).__name__}, not a mmbench.api.ObjectiveResult"):
                continue
            for field in ("loss", "bound"):
                value = getattr(result, field)
                p.check(isinstance(value, Tensor) and value.dim() == 0 and bool(torch.isfinite(value)),
                        f"{where}: {field} is not a finite scalar tensor ({value!r})")
            p.check(passes == declared, f"{where}: {passes:g} decoder passes counted, {declared} declared "
                    f"by decoder_passes({M})")
            p.check(result.decoder_passes == passes,
                    f"{where}: reports {result.decoder_passes} decoder passes, {passes:g} counted")
            if not p.check(isinstance(result.loss, Tensor) and result.loss.requires_grad,
                           f"{where}: the loss carries no gradient"):
                continue
            result.loss.backward()
            for kind, nets in (("encoder", getattr(model, "encoders", ())), ("decoder", getattr(model, "decoders", ()))):
                for name, net in zip(model.names, nets):
                    grads = [q.grad for q in net.parameters() if q.grad is not None]
                    p.check(bool(grads) and any(g.abs().sum() > 0 for g in grads),
                            f"{where}: no gradient reaches the {kind} of {name}")
                    p.check(all(torch.isfinite(g).all() for g in grads), f"{where}: the {kind} of {name} "
                            "gets a non-finite gradient")
        with torch.no_grad():
            _check_model_contract(p, model, xs, batch, f"M={M}")
    p.raise_if_any()
    return counted


def _check_model_contract(p: _Problems, model, xs: list[Tensor], batch: int, where: str) -> None:
    """What every metric reads of a model (mmbench.model): a prior over the whole latent, and
    given any observed subset a posterior, cross latents and a representation, all finite."""
    try:
        prior = model.prior()
        dims = prior.mean.shape[-1]
        z = prior.rsample(4)
    except Exception as exc:
        p.check(False, f"{where}: the model's prior(): {type(exc).__name__}: {exc} (needs .mean, .rsample(n))")
        return
    p.check(tuple(z.shape) == (4, dims), f"{where}: prior().rsample(4) is {tuple(z.shape)}, expected {(4, dims)}")
    for d, name in enumerate(model.names):
        out = model.decode(d, z)
        p.check(bool(torch.isfinite(out).all()), f"{where}: decoding {name} from prior samples is not finite")
    M = len(xs)
    view = items_view(model, xs)  # the subset metrics' road: the same items read once for many subsets
    for observed in [[m] for m in range(M)] + [list(range(M))]:
        given = [x if m in observed else None for m, x in enumerate(xs)]
        at = f"{where}, given {observed}"
        _check_distribution(p, model.condition(given, observed), batch, dims, f"{at}: condition")
        cross = model.cross_latents(given, observed)
        p.check(tuple(cross.shape) == (batch, dims) and bool(torch.isfinite(cross).all()),
                f"{at}: cross_latents is {tuple(cross.shape)} or not finite, expected {(batch, dims)}")
        rep = model.represent(given, observed)
        p.check(rep.dim() == 2 and rep.shape[0] == batch and bool(torch.isfinite(rep).all()),
                f"{at}: represent is {tuple(rep.shape)} or not finite, expected [{batch}, R]")
        p.check(torch.equal(view.represent(observed), rep),
                f"{at}: for_items(xs).represent differs from represent on the observed items alone")
        state = torch.random.get_rng_state()
        plain = model.cross_latents(given, observed)
        torch.random.set_rng_state(state)
        p.check(torch.equal(view.cross_latents(observed), plain),
                f"{at}: for_items(xs).cross_latents differs from cross_latents (same draws) on the observed items alone")


def _check_distribution(p: _Problems, q, batch: int, latent_dim: int, where: str) -> None:
    try:
        mean, z = q.mean, q.rsample(3)
        log_q = q.log_prob(z)
    except Exception as exc:  # report, with the others, rather than stop at the first
        p.check(False, f"{where}: {type(exc).__name__}: {exc} (needs .mean, .rsample(n), .log_prob(z))")
        return
    p.check(tuple(mean.shape) == (batch, latent_dim), f"{where}: mean is {tuple(mean.shape)}, "
            f"expected {(batch, latent_dim)}")
    p.check(tuple(z.shape) == (3, batch, latent_dim), f"{where}: rsample(3) is {tuple(z.shape)}, "
            f"expected {(3, batch, latent_dim)}")
    p.check(tuple(log_q.shape) == (3, batch) and bool(torch.isfinite(log_q).all()),
            f"{where}: log_prob of its own samples is not finite [3, B] ({tuple(log_q.shape)})")


# ----------------------------------------------------------------------------- datasets
def check_dataset(dataset: Dataset, data: PairedData | None = None, *, data_dir: Path | None = None,
                  latent_dim: int = 4) -> PairedData:
    """A dataset's contract: its declarations, and its splits' shapes, indices and labels.

    - name, description, num_classes and distinct modality names are declared; ``configure()``
      without options returns a dataset of the same name; its ``options`` are well declared;
    - each split's pools hold every modality, shaped [n, *modality.shape], with a label each;
    - ``index`` is an integer [N, M] whose column j stays inside modality j's pool;
    - ``labels`` [N] equal the pool labels of every paired item, and lie in [0, num_classes);
    - ``modalities_for(data)`` gives modalities of the same names, and loading left the
      dataset's own ``modalities`` as they were (what the modalities learn from the files goes
      into ``data.derived``, so that a fresh process builds the same model);
    - each of those modalities' networks, likelihood, judge and rendering work on a few of its
      items (:func:`check_modality`).

    ``data`` defaults to ``dataset.load(data_dir)``, which raises mmbench.errors.DataError when
    the data are absent (a test may skip on it). Returns the data."""
    p = _Problems(f"dataset {getattr(dataset, 'name', dataset)!r}")
    p.check(isinstance(dataset, Dataset), "is not a mmbench.api.Dataset")
    p.check(isinstance(getattr(dataset, "name", None), str) and bool(dataset.name), "has no `name`")
    p.check(isinstance(dataset.description, str) and bool(dataset.description), "has no `description`")
    p.check(isinstance(dataset.num_classes, int) and dataset.num_classes >= 1, "num_classes is not a positive int")
    p.check(isinstance(dataset.defaults, dict), "`defaults` is not a dict of hyper-parameters")
    modalities = list(dataset.modalities)
    names = [getattr(m, "name", None) for m in modalities]
    p.check(bool(modalities) and all(isinstance(m, Modality) for m in modalities),
            "its modalities are not mmbench.api.Modality objects")
    p.check(len(set(names)) == len(names) and all(isinstance(n, str) and n for n in names),
            f"modality names are missing or repeated: {names}")
    p.check(getattr(dataset.configure(), "name", None) == dataset.name, "configure() without options changes it")
    _check_options(p, dataset)
    p.raise_if_any()

    declared = [m.describe() for m in modalities]
    if data is None:
        data = dataset.load(Path(data_dir) if data_dir is not None else None)
    if not p.check(isinstance(data, PairedData), f"load() returned {type(data).__name__}, not a PairedData"):
        p.raise_if_any()
    p.check([m.describe() for m in dataset.modalities] == declared,
            "load() changed the dataset's own modalities; derive what depends on the files in "
            "modalities_for(data) from data.derived instead")
    modalities = list(dataset.modalities_for(data))
    p.check([getattr(m, "name", None) for m in modalities] == names,
            f"modalities_for(data) names {[getattr(m, 'name', None) for m in modalities]}, the dataset {names}")
    p.raise_if_any()
    for split_name in ("train", "test"):
        split = getattr(data, split_name)
        _check_split(p, split, modalities, dataset.num_classes, split_name)
    p.raise_if_any()
    for modality in modalities:
        try:
            check_modality(modality, data.train.pools[modality.name][:3], dataset.num_classes, latent_dim)
        except ConformanceError as exc:
            p.check(False, str(exc).replace("\n", "\n  "))
    p.raise_if_any()
    return data


def _check_split(p: _Problems, split, modalities: list[Modality], num_classes: int, where: str) -> None:
    names = [m.name for m in modalities]
    if not p.check(isinstance(split, Split), f"{where}: not a mmbench.api.Split"):
        return
    p.check(set(split.pools) == set(names), f"{where}: pools hold {sorted(split.pools)}, modalities are {names}")
    p.check(set(split.pool_labels) == set(names), f"{where}: pool_labels hold {sorted(split.pool_labels)}")
    index, labels = split.index, split.labels
    if not p.check(index.dim() == 2 and index.shape[1] == len(names) and index.shape[0] > 0
                   and not index.is_floating_point(), f"{where}: index is {index.dtype} {tuple(index.shape)}, "
                   f"expected integers [N>0, {len(names)}]"):
        return
    p.check(tuple(labels.shape) == (index.shape[0],) and not labels.is_floating_point(),
            f"{where}: labels are {labels.dtype} {tuple(labels.shape)}, expected integers [{index.shape[0]}]")
    p.check(bool(((labels >= 0) & (labels < num_classes)).all()), f"{where}: labels outside [0, {num_classes})")
    for j, m in enumerate(modalities):
        pool, pool_labels = split.pools.get(m.name), split.pool_labels.get(m.name)
        if pool is None or pool_labels is None:
            continue
        p.check(tuple(pool.shape[1:]) == tuple(m.shape), f"{where}: pool {m.name} is {tuple(pool.shape)}, "
                f"its modality's shape is {tuple(m.shape)}")
        p.check(len(pool_labels) == len(pool), f"{where}: {len(pool_labels)} labels for {len(pool)} items of {m.name}")
        column = index[:, j]
        if p.check(bool(((column >= 0) & (column < len(pool))).all()),
                   f"{where}: index column {j} ({m.name}) leaves [0, {len(pool)})") and len(pool_labels) == len(pool):
            wrong = int((pool_labels[column] != labels).sum())
            p.check(wrong == 0, f"{where}: {wrong} pairs whose {m.name} item has another label than the pair")


def check_modality(modality: Modality, x: Tensor, num_classes: int = 10, latent_dim: int = 4) -> None:
    """A modality's contract on a few of its items x [B, *shape]: the encoder gives [B, 2·D];
    the decoder's output gives a finite log-likelihood [B] and a ``decode_mean`` shaped like x;
    the judge (when there is one) gives [B, num_classes] logits; ``render`` gives an [H, W, 3]
    uint8 array or a string."""
    p = _Problems(f"modality {getattr(modality, 'name', modality)!r}")
    B = len(x)
    p.check(tuple(x.shape[1:]) == tuple(modality.shape), f"items are {tuple(x.shape[1:])}, shape says {modality.shape}")
    with torch.no_grad():
        raw = modality.encoder(latent_dim)(x)
        p.check(tuple(raw.shape) == (B, 2 * latent_dim), f"encoder gives {tuple(raw.shape)}, expected {(B, 2 * latent_dim)}")
        out = modality.decoder(latent_dim)(torch.randn(B, latent_dim))
        ll = modality.log_likelihood(out, x)
        p.check(tuple(ll.shape) == (B,) and bool(torch.isfinite(ll).all()),
                f"log_likelihood gives {tuple(ll.shape)} (finite: {bool(torch.isfinite(ll).all())}), expected finite [{B}]")
        mean = modality.decode_mean(out)
        p.check(tuple(mean.shape) == tuple(x.shape), f"decode_mean gives {tuple(mean.shape)}, expected {tuple(x.shape)}")
        judge = modality.classifier(num_classes)
        if judge is not None:
            logits = judge.eval()(x)
            p.check(tuple(logits.shape) == (B, num_classes), f"classifier gives {tuple(logits.shape)}, "
                    f"expected {(B, num_classes)}")
    picture = modality.render(x[0])
    p.check(isinstance(picture, str) or (isinstance(picture, np.ndarray) and picture.dtype == np.uint8
                                          and picture.ndim == 3 and picture.shape[2] == 3),
            f"render gives {type(picture).__name__}, expected an [H, W, 3] uint8 array or a string")
    p.check(isinstance(modality.weight, numbers.Real) and modality.weight > 0,
            f"weight λ is {modality.weight!r}, expected a positive number")
    p.raise_if_any()


# ----------------------------------------------------------------------------- metrics
def check_metric(metric: Metric, ctx: EvalContext) -> list[MetricValue] | str:
    """A metric's contract: its declarations, then its values on ``ctx`` (see :func:`tiny_context`).

    - name, criterion, unit and description are non-empty strings and ``higher_is_better`` is a
      bool that the metric itself declares (not the base class's default); its ``options`` are
      Option declarations with distinct plain names and defaults that pass their own checks;
    - ``skip_reason(ctx)`` is None or a non-empty string;
    - ``evaluate(ctx)`` yields at least one MetricValue, with distinct well-formed names
      (``family`` or ``family[detail]``), finite real values (within [0, 1] when the unit is
      ``fraction``) and JSON-serialisable details.

    Returns the values, or the skip reason when the metric does not apply to ctx."""
    p = _Problems(f"metric {getattr(metric, 'name', metric)!r}")
    p.check(isinstance(metric, Metric), "is not a mmbench.api.Metric")
    p.check(isinstance(getattr(metric, "name", None), str) and bool(METRIC_NAME.fullmatch(metric.name or "")),
            "has no well-formed `name`")
    for attribute in ("criterion", "unit", "description"):
        value = getattr(metric, attribute, None)
        p.check(isinstance(value, str) and bool(value.strip()), f"declares no `{attribute}` (a non-empty string)")
    p.check(_declares(metric, Metric, "higher_is_better") and isinstance(metric.higher_is_better, bool),
            "does not declare `higher_is_better` (True or False) itself")
    _check_options(p, metric)
    p.raise_if_any()

    reason = metric.skip_reason(ctx)
    if reason is not None:
        p.check(isinstance(reason, str) and bool(reason.strip()), f"skip_reason gave {reason!r}, not None or a reason")
        p.raise_if_any()
        return reason
    values = list(metric.evaluate(ctx))
    p.check(bool(values), "evaluate yielded no values")
    seen = set()
    for v in values:
        if not p.check(isinstance(v, MetricValue), f"yielded {type(v).__name__}, not a mmbench.api.MetricValue"):
            continue
        p.check(isinstance(v.name, str) and bool(METRIC_NAME.fullmatch(v.name)),
                f"value name {v.name!r} is not `family` or `family[detail]`")
        p.check(v.name not in seen, f"value {v.name!r} is yielded twice")
        seen.add(v.name)
        real = isinstance(v.value, numbers.Real) and not isinstance(v.value, bool)
        if p.check(real and math.isfinite(v.value), f"{v.name} = {v.value!r} is not a finite real number"):
            if metric.unit == "fraction":
                p.check(0 <= v.value <= 1, f"{v.name} = {v.value} is a fraction outside [0, 1]")
        details = getattr(v, "details", None)
        if details is not None:
            try:
                json.dumps(details)
            except (TypeError, ValueError):
                p.check(False, f"{v.name}: details are not JSON-serialisable ({details!r})")
    p.raise_if_any()
    return values


def tiny_context(posterior: Posterior, dataset: Dataset | None = None, data: PairedData | None = None, *,
                 epochs: int = 1, latent_dim: int = 8, K: int = 1, batch_size: int = 64, seed: int = 0,
                 device: str | torch.device = "cpu", cache_dir: Path | None = None,
                 run_dir: Path | None = None) -> EvalContext:
    """An EvalContext around a model trained briefly (``epochs`` on ``dataset``, default
    :class:`ToyDataset`), for metric tests (a metric's own settings: ``metric.configure(...)``);
    judges are cached in ``cache_dir`` when given; ``run_dir`` is the run directory artifacts
    write below (:func:`check_artifact` needs one)."""
    dataset = dataset if dataset is not None else ToyDataset()
    device = torch.device(device)
    if data is None:
        data = dataset.load(None) if isinstance(dataset, ToyDataset) else None
        if data is None:
            raise MMBenchError(f"tiny_context needs the data of dataset '{dataset.name}': pass data=dataset.load(dir)")
    data = data.to(device)
    torch.manual_seed(seed)
    modalities = dataset.modalities_for(data)
    model = posterior.build_model(modalities, latent_dim).to(device)
    cfg = TrainConfig(epochs=epochs, K=K, batch_size=batch_size, lr=1e-3, estimator=posterior.estimators[0], seed=seed)
    train(model, posterior, data.train, cfg, progress=False)
    model.eval()
    return EvalContext(dataset=dataset, data=data, model=model, posterior=posterior, device=device, seed=seed,
                       cache_dir=cache_dir, run_dir=run_dir, modalities=modalities)


# ----------------------------------------------------------------------------- artifacts
def check_artifact(artifact: Artifact, ctx: EvalContext) -> list[Path] | str:
    """An artifact's contract: its declarations, then its files on ``ctx`` (a
    :func:`tiny_context` with a ``run_dir``), written as the runner writes them.

    - name and description are non-empty strings; its ``options`` are well declared (as
      :func:`check_metric` says);
    - ``skip_reason(ctx)`` is None or a non-empty string;
    - ``write(ctx, folder)`` returns at least one path, each a non-empty file it wrote inside
      ``folder``, none twice.

    Returns the paths, or the skip reason when the artifact does not apply to ctx."""
    from .artifacts import artifact_folder

    p = _Problems(f"artifact {getattr(artifact, 'name', artifact)!r}")
    p.check(isinstance(artifact, Artifact), "is not a mmbench.api.Artifact")
    _check_declarations(p, artifact)
    p.check(ctx.run_dir is not None, "check_artifact needs a context with a run_dir (tiny_context(..., run_dir=tmp_path))")
    p.raise_if_any()
    reason = artifact.skip_reason(ctx)
    if reason is not None:
        p.check(isinstance(reason, str) and bool(reason.strip()), f"skip_reason gave {reason!r}, not None or a reason")
        p.raise_if_any()
        return reason
    folder = artifact_folder(ctx.run_dir, artifact.name)
    folder.mkdir(parents=True, exist_ok=True)
    returned = artifact.write(ctx, folder)
    paths = [Path(x) for x in returned or []]
    p.check(bool(paths), "write returned no paths (it should return the files it wrote)")
    p.check(len({x.resolve() for x in paths}) == len(paths), "write returned a path twice")
    for path in paths:
        if not p.check(path.is_file() and path.stat().st_size > 0, f"{path} is not a non-empty file"):
            continue
        try:
            path.resolve().relative_to(folder.resolve())
        except ValueError:
            p.check(False, f"{path} lies outside the folder it was given ({folder})")
    p.raise_if_any()
    return paths


def _check_declarations(p: "_Problems", item) -> None:
    """An artifact's or a tracker's declarations: a name and a description (non-empty
    strings), and well-declared options."""
    for attribute in ("name", "description"):
        value = getattr(item, attribute, None)
        p.check(isinstance(value, str) and bool(value.strip()), f"declares no `{attribute}` (a non-empty string)")
    _check_options(p, item)


# ----------------------------------------------------------------------------- trackers
def check_tracker(tracker: Tracker, run_dir: Path, epochs: int = 3) -> Tracker:
    """A tracker's contract, on a made-up run in ``run_dir`` (a temporary folder): its
    declarations, then every call of a run in order — ``start``, ``log_epoch`` for each of
    ``epochs`` epochs, ``log_metrics``, ``log_artifact`` (a small PNG), ``finish("done")`` —
    each returning None without raising. Returns the tracker (configured copy) it ran, so that
    a test can read back what it logged."""
    p = _Problems(f"tracker {getattr(tracker, 'name', tracker)!r}")
    p.check(isinstance(tracker, Tracker), "is not a mmbench.api.Tracker")
    _check_declarations(p, tracker)
    why = tracker.unavailable()
    p.check(why is None or (isinstance(why, str) and bool(why.strip())), f"unavailable() gave {why!r}, not None or a reason")
    p.raise_if_any()
    if why:
        raise ConformanceError(f"tracker {tracker.name!r} cannot run here: {why}")
    from PIL import Image

    run_dir = Path(run_dir)
    picture = run_dir / "artifacts" / "check" / "picture.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 30, 30)).save(picture)
    spec = {"dataset": "toy", "posterior": "check", "seed": 0, "hparams": {"epochs": epochs, "K": 1},
            "metrics": None, "dataset_options": {}, "options": {}, "artifacts": None}
    run_info = {"run_dir": str(run_dir), "name": "toy/check/seed-0", "spec": spec,
                "resolved_hparams": {**spec["hparams"], "estimator": "reparam"}, "options": {}, "provenance": {},
                "data": {}}
    configured = tracker.configure()
    calls = [("start", (run_info,))]
    calls += [("log_epoch", (e, {"bound": -100.0 + e, "seconds": 0.5, "step_ms": 2.0, "decoder_passes": 2}))
              for e in range(1, epochs + 1)]
    calls += [("log_metrics", ([{"metric": "coherence_cross[a->b]", "value": 0.5, "family": "coherence_cross",
                                 "criterion": "cross coherence", "higher_is_better": True, "unit": "fraction"},
                                {"metric": "train_s", "value": 1.5, "family": "cost", "criterion": "cost",
                                 "higher_is_better": False, "unit": "s"}],)),
              ("log_artifact", (picture,)), ("finish", ("done",))]
    for method, args in calls:
        try:
            returned = getattr(configured, method)(*args)
        except Exception as exc:
            raise ConformanceError(f"tracker {tracker.name!r} does not conform:\n  - {method} raised "
                                   f"{type(exc).__name__}: {exc}") from exc
        p.check(returned is None, f"{method} returned {type(returned).__name__}; it returns nothing")
    p.raise_if_any()
    return configured


# ----------------------------------------------------------------------------- a plugin module
def registered(module) -> dict[str, list]:
    """What a plugin module registers, by hook: {"posteriors": [...], ...}, calling its
    ``@hookimpl`` functions as the plugin manager would (without the entry point). Raises
    ConformanceError when it implements a hook mmbench does not have, or registers nothing."""
    from . import hookspecs

    hooks = {n for n in dir(hookspecs) if n.startswith("register_")}
    found = [n for n in dir(module) if hasattr(getattr(module, n), "mmbench_impl")]
    p = _Problems(f"plugin module {getattr(module, '__name__', module)!r}")
    p.check(bool(found), "has no @hookimpl function")
    p.check(not set(found) - hooks, f"implements unknown hook(s) {sorted(set(found) - hooks)}; "
            f"the hooks are {', '.join(sorted(hooks))}")
    p.raise_if_any()
    out: dict[str, list] = {}
    for name in found:
        items = out.setdefault(name[len("register_"):], [])
        returned = getattr(module, name)(register=items.append)
        p.check(returned is None, f"{name} returned {type(returned).__name__}; a hook calls register(item) "
                "for each item and returns nothing")
    p.raise_if_any()
    return out
