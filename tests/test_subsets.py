"""Metrics from subsets of the modalities (plugins/mmbench_metrics/subsets.py): which subsets are
read, and the values on models whose answer is known in closed form."""

import dataclasses
import math
import os
import subprocess
import sys
from itertools import combinations
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.api import Dataset, Modality, PairedData, Split
from mmbench.errors import Unsupported
from mmbench.evaluation import EvalContext
from mmbench.runner import evaluate_metrics
from mmbench_metrics import LatentAccuracy
from mmbench_metrics.subsets import ConditionalCoherence, subsets_of_size

pytestmark = pytest.mark.usefixtures("single_thread")
CLASSES = 10
CHANCE = 1 / CLASSES


# ----------------------------------------------------------------------------- which subsets
@pytest.mark.parametrize("M", [3, 5, 8])
def test_every_subset_when_there_are_few(M):
    for k in range(1, M):
        chosen, total = subsets_of_size(M, k, limit=None)
        assert total == len(chosen) == math.comb(M, k)
        assert len(set(chosen)) == total and all(len(s) == k and list(s) == sorted(s) for s in chosen)
        assert subsets_of_size(M, k, limit=math.comb(M, k)) == (chosen, total)


def test_sampled_subsets_are_distinct_and_the_same_every_time():
    chosen, total = subsets_of_size(8, 4, limit=10)
    assert total == 70 and len(chosen) == len(set(chosen)) == 10
    assert set(chosen) <= set(combinations(range(8), 4)) and chosen == sorted(chosen)
    assert subsets_of_size(8, 4, limit=10) == (chosen, total)
    assert subsets_of_size(8, 3, limit=10)[0] != subsets_of_size(8, 5, limit=10)[0]
    # Another process with another hash seed draws the same subsets (no dependence on hash()).
    code = "from mmbench_metrics.subsets import subsets_of_size; print(subsets_of_size(8, 4, 10)[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == str(chosen)


# ----------------------------------------------------------------------------- known answers
class LabelModality(Modality):
    """An observation that is the label, one-hot with a little noise: a linear judge reads it
    perfectly, so a model's coherence is exactly whether it passed the label on."""

    def __init__(self, name):
        self.name, self.shape = name, (CLASSES,)

    def decode_mean(self, out):
        return out

    def classifier(self, num_classes):
        # Starts as the perfect judge (argmax), so that its short training cannot spoil it.
        net = nn.Linear(CLASSES, num_classes)
        with torch.no_grad():
            net.weight.copy_(5 * torch.eye(CLASSES)), net.bias.zero_()
        return net


class LabelDataset(Dataset):
    name = "labels"
    num_classes = CLASSES

    def __init__(self, num_modalities):
        self._modalities = [LabelModality(f"m{j}") for j in range(num_modalities)]

    @property
    def modalities(self):
        return self._modalities

    def split(self, n: int, gen: torch.Generator) -> Split:
        y = torch.randint(0, CLASSES, (n,), generator=gen)
        pools = {m.name: F.one_hot(y, CLASSES).float() + 0.05 * torch.randn(n, CLASSES, generator=gen)
                 for m in self._modalities}
        index = torch.arange(n).unsqueeze(1).expand(n, len(self._modalities)).contiguous()
        return Split(pools=pools, pool_labels={name: y for name in pools}, index=index, labels=y)

    def build(self) -> PairedData:
        gen = torch.Generator().manual_seed(0)
        return PairedData(self.split(200, gen), self.split(400, gen))


class LabelReader(nn.Module):
    """A model of the contract whose latent is a one-hot label: given the observed modalities it
    copies the label of the first one it reads (``reads``: which modalities it can read), and
    draws a label at random when it reads none of them. It decodes every modality as that label."""

    def __init__(self, modalities, reads):
        super().__init__()
        self.modalities, self.reads, self.latents_decoded = list(modalities), set(reads), 0

    @property
    def names(self):
        return [m.name for m in self.modalities]

    def cross_latents(self, xs, observed):
        readable = [m for m in observed if m in self.reads]
        n = len(next(x for x in xs if x is not None))
        assert all((xs[m] is not None) == (m in observed) for m in range(len(xs))), "only the observed are given"
        label = xs[readable[0]].argmax(-1) if readable else torch.randint(0, CLASSES, (n,))
        return F.one_hot(label, CLASSES).float()

    represent = cross_latents

    def decode(self, d, z):
        self.latents_decoded += len(z)
        return z

    def condition(self, xs, observed):
        raise Unsupported("this model has no posterior distribution, only latents")


def _context(M, reads):
    dataset = LabelDataset(M)
    model = LabelReader(dataset.modalities, reads)
    return EvalContext(dataset=dataset, data=dataset.build(), model=model, posterior=SimpleNamespace(name="label-reader"),
                       device=torch.device("cpu"))


def _with_model(ctx, reads):
    """The same data and judges (trained once), another model."""
    return dataclasses.replace(ctx, model=LabelReader(ctx.dataset.modalities, reads))


def _values(metric, ctx):
    torch.manual_seed(0)
    return {v.name: v for v in metric.evaluate(ctx)}


M = 4


@pytest.fixture(scope="module")
def judged_contexts():
    copies = _context(M, range(M))
    assert all(copies.judge(m)[1] == 1.0 for m in range(M)), "the label judges must be perfect for the closed forms"
    return {"copies": copies, "ignores": _with_model(copies, ()), "reads m0": _with_model(copies, (0,))}


def test_a_model_copying_the_label_is_coherent_given_any_subset(judged_contexts):
    values = _values(ConditionalCoherence(), judged_contexts["copies"])
    names = [f"coherence_cond[k={k}]" for k in range(1, M)]
    names += [f"coherence_cond[k={k},->m{t}]" for k in range(1, M) for t in range(M)]
    assert list(values) == names  # the per-k summary first, then per target
    assert all(v.value == 1.0 and v.details["se"] == 0 for v in values.values())
    k2 = values["coherence_cond[k=2]"].details
    assert (k2["subsets_used"], k2["subsets_of"], k2["readings"], k2["items"]) == (6, 6, 6 * 2, 400)
    assert values["coherence_cond[k=2,->m1]"].details["readings"] == math.comb(M - 1, 2)


def test_a_model_ignoring_what_it_is_given_is_at_chance(judged_contexts):
    values = _values(ConditionalCoherence(), judged_contexts["ignores"])
    for v in values.values():
        assert abs(v.value - CHANCE) <= 4 * v.details["se"], v


def test_a_model_reading_one_modality_scores_the_share_of_subsets_holding_it(judged_contexts):
    """Coherence is 1 where m0 is observed, chance elsewhere: of the (subset of k, unobserved
    target) readings, k/M hold m0; of the subsets of k without target t ≠ m0, k/(M−1) do; a
    target m0 is never generated from a subset holding it."""
    values = _values(ConditionalCoherence(), judged_contexts["reads m0"])
    for k in range(1, M):
        share = k / M
        v = values[f"coherence_cond[k={k}]"]
        assert abs(v.value - (share + (1 - share) * CHANCE)) <= 4 * v.details["se"], v
        v = values[f"coherence_cond[k={k},->m0]"]
        assert abs(v.value - CHANCE) <= 4 * v.details["se"], v
        for t in range(1, M):
            share = k / (M - 1)
            v = values[f"coherence_cond[k={k},->m{t}]"]
            assert abs(v.value - (share + (1 - share) * CHANCE)) <= 4 * v.details["se"], v
    assert values["coherence_cond[k=1]"].value < values["coherence_cond[k=2]"].value < values["coherence_cond[k=3]"].value


def test_the_latent_probe_from_subsets(judged_contexts):
    copies = _values(LatentAccuracy(), judged_contexts["copies"])
    assert [copies[f"latent_acc[k={k}]"].value for k in range(1, M)] == [1.0] * (M - 1)
    ignores = _values(LatentAccuracy(), judged_contexts["ignores"])
    reads = _values(LatentAccuracy(), judged_contexts["reads m0"])
    for k in range(1, M):
        # A probe on random labels guesses: chance, give or take the test labels' class shares.
        assert abs(ignores[f"latent_acc[k={k}]"].value - CHANCE) < 0.06
        share = math.comb(M - 1, k - 1) / math.comb(M, k)  # subsets holding m0
        assert abs(reads[f"latent_acc[k={k}]"].value - (share + (1 - share) * CHANCE)) < 0.06
    assert reads["latent_acc[k=3]"].details == {"subsets_used": 4, "subsets_of": 4, "items": 400,
                                               "se": reads["latent_acc[k=3]"].details["se"], "chance": 0.1}


def test_sampled_subsets_are_recorded_and_enough_for_a_known_answer():
    ctx = _context(5, (0,))
    metric = ConditionalCoherence().configure(subsets=3, items=300)
    values = _values(metric, ctx)
    for k in range(1, 5):
        chosen, total = subsets_of_size(5, k, 3)
        details = values[f"coherence_cond[k={k}]"].details
        assert details["subsets_used"] == min(3, total) and details["subsets_of"] == total
        assert details["items"] == 300
        if total > 3:
            assert details["subsets"] == [",".join(f"m{m}" for m in s) for s in chosen]
            # The expected value over the sampled subsets alone: a loop over them.
            readings = [(s, t) for s in chosen for t in range(5) if t not in s]
            expected = sum(1.0 if 0 in s else CHANCE for s, _ in readings) / len(readings)
            assert abs(values[f"coherence_cond[k={k}]"].value - expected) <= 4 * details["se"] + 1e-9
        else:
            assert "subsets" not in details


def test_the_runner_skips_them_for_a_model_without_latents_to_give():
    ctx = _context(3, range(3))
    ctx.model.cross_latents = ctx.model.condition  # raises Unsupported
    rows, skipped = evaluate_metrics(ctx, [ConditionalCoherence()])
    assert rows == [] and "unsupported" in skipped["coherence_cond"]


def test_two_modalities_are_skipped_with_a_reason():
    assert "three or more" in ConditionalCoherence().skip_reason(_context(2, range(2)))
