"""Test plugins for tests/test_grid.py, loaded with --plugins-dir.

``tiny-digits``: scikit-learn's 8×8 digits paired with an inverted, mirrored digit of the
same class, with small MLPs: real data, and an epoch in milliseconds, so that fault tests
run whole grids in seconds on two busy cores.
``test_bound``: the bound on a fixed batch of the test split, a continuous function of every
trained weight (no judge to train, so a grid runs in seconds), which any difference between
an interrupted-then-resumed run and an uninterrupted one would move. Its option ``pairs`` (the
batch's size) was called ``test_pairs`` before it owned it, as options that moved out of the
core keep their former names.
``diverging``: PoE whose bound turns NaN in its second epoch (tiny-digits: 1400 pairs in
batches of 128 make 11 steps an epoch).
``test-coupled``: PoE that does not declare ``items_independent``, so its steps may not be
split into micro-batches."""

import numpy as np
import torch

from mmbench import hookimpl
from mmbench.api import Dataset, Metric, MetricValue, Option, PairedData, Split
from mmbench.modalities import ImageModality
from mmbench_poe import PoE


class TinyDigits(Dataset):
    name = "tiny-digits"
    description = "8x8 digits paired with an inverted mirrored digit of the same class (test plugin)"
    defaults = {"latent_dim": 4, "K": 1, "epochs": 2, "batch_size": 128, "lr": 1e-3}
    _modalities = [ImageModality("plain", (1, 8, 8), hidden=32), ImageModality("inverted", (1, 8, 8), hidden=32)]

    @property
    def modalities(self):
        return self._modalities

    def load(self, data_dir, download=False):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images / 16.0, dtype=torch.float32)[:, None]
        labels = torch.tensor(bunch.target, dtype=torch.int64)
        rng = np.random.default_rng(0)
        splits = []
        for ids in (np.arange(0, 1400), np.arange(1400, len(labels))):
            y = labels[ids]
            partner = np.empty(len(ids), dtype=np.int64)
            for c in range(10):  # each item paired with another item of its class
                members = np.flatnonzero(y.numpy() == c)
                partner[members] = rng.permutation(members)
            x = images[ids]
            pools = {"plain": x, "inverted": 1 - x.flip(-1)}
            index = torch.stack([torch.arange(len(ids)), torch.from_numpy(partner)], 1)
            splits.append(Split(pools, {"plain": y, "inverted": y}, index, y))
        return PairedData(*splits, {"name": self.name, "pairs": [len(s) for s in splits]})


class TestBound(Metric):
    name = "test_bound"
    criterion = "fit"
    unit = "nats"
    description = "the training bound on the first 256 test pairs, K=1"
    options = (Option("pairs", 256, "the test pairs the bound is computed on", low=1, aliases=("test_pairs",)),)

    @torch.no_grad()
    def evaluate(self, ctx):
        split = ctx.data.test
        rows = torch.arange(min(self.option_values["pairs"], len(split)), device=split.index.device)
        torch.manual_seed(ctx.seed)
        result = ctx.posterior.objective(ctx.model, split.batch(rows, ctx.model.names), 1, ctx.posterior.estimators[0])
        yield MetricValue("test_bound", float(result.bound), {"pairs": len(rows)})


class Diverging(PoE):
    name = "diverging"
    description = "poe whose bound turns NaN in its second epoch (a test plugin)"

    def objective(self, model, xs, K, estimator):
        result = super().objective(model, xs, K, estimator)
        if torch.is_grad_enabled() and model.training:  # training steps only (not the micro-batch probe)
            model.steps_seen = getattr(model, "steps_seen", 0) + 1
            if model.steps_seen > 11:
                result.loss = result.loss * float("nan")
                result.bound = result.bound * float("nan")
        return result


class Coupled(PoE):
    name = "test-coupled"
    description = "poe that does not declare its objective a mean over items (a test plugin)"
    items_independent = False


@hookimpl
def register_datasets(register):
    register(TinyDigits())


@hookimpl
def register_metrics(register):
    register(TestBound())


@hookimpl
def register_posteriors(register):
    register(Diverging())
    register(Coupled())
