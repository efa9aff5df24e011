"""The MMVAE paper's criteria as metrics (paper §4): latent factorisation (Table 1), joint and
cross coherence (Table 2), and the judges' own accuracy beside them — each coherence metric
twice, read by two judge families of different kinds (``coherence_cross[a->b]`` by the
modalities' networks, ``coherence_cross_alt[a->b]`` by random-feature ridge read-outs); with
three modalities or more, the same read from subsets of them (:mod:`mmbench_metrics.subsets`)."""

from __future__ import annotations

import dataclasses

import torch

from mmbench import hookimpl
from mmbench.api import Metric, MetricValue, Option
from mmbench.judges import family as judge_family
from mmbench.judges import predict

from .chance import chance
from .subsets import SUBSETS_OPTION, ConditionalCoherence, mean_and_standard_error, subset_details, subsets_of_size

JOINT_SAMPLES = 10_000
LATENT_PROBE_ITEMS = 5_000


def _linear_probe_predictions(train_x, train_y, test_x):
    """Multinomial logistic regression on representations, fitted on train: its classes for test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return clf.predict(scaler.transform(test_x))


def _linear_probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """The probe's accuracy on test (see :func:`_linear_probe_predictions`)."""
    return float((_linear_probe_predictions(train_x, train_y, test_x) == test_y).mean())


class LatentAccuracy(Metric):
    name = "latent_acc"
    criterion = "latent factorisation"
    higher_is_better = True
    unit = "fraction"
    description = ("linear probe on the model's representation (posterior means): per modality (its own items), "
                   "joint (paired items) and, with three modalities or more, given each subset of k (paired items)")
    options = (SUBSETS_OPTION,)

    def evaluate(self, ctx):
        data = ctx.data
        for m, name in enumerate(ctx.names):
            train = ctx.representations({m: data.train.pools[name]})
            test = ctx.representations({m: data.test.pools[name]})
            acc = _linear_probe_accuracy(train.cpu().numpy(), data.train.pool_labels[name].cpu().numpy(),
                                         test.cpu().numpy(), data.test.pool_labels[name].cpu().numpy())
            yield MetricValue(f"latent_acc[{name}]", acc, {"chance": chance(data.test.labels)})
        if len(ctx.names) > 1:
            gen = torch.Generator().manual_seed(0)
            train_rows = torch.randperm(len(data.train), generator=gen)[:LATENT_PROBE_ITEMS].to(ctx.device)
            test_rows = ctx.test_rows(LATENT_PROBE_ITEMS)
            feats = []
            for split, rows in ((data.train, train_rows), (data.test, test_rows)):
                xs = split.batch(rows, ctx.names)
                feats.append((ctx.representations(dict(enumerate(xs))).cpu().numpy(), split.labels[rows].cpu().numpy()))
            yield MetricValue("latent_acc[joint]", _linear_probe_accuracy(*feats[0], *feats[1]),
                              {"chance": chance(data.test.labels)})
            if len(ctx.names) > 2:
                yield from self.from_subsets(ctx, train_rows, test_rows)

    def from_subsets(self, ctx, train_rows, test_rows):
        """``latent_acc[k=<k>]``: the probe given each subset of k modalities (k = 1..M-1; k = M
        is ``latent_acc[joint]``), fitted and scored on the same pairs as the joint one."""
        data, names = ctx.data, ctx.names
        train_xs, test_xs = data.train.batch(train_rows, names), data.test.batch(test_rows, names)
        train_y, test_y = data.train.labels[train_rows].cpu().numpy(), data.test.labels[test_rows]
        by_size = {k: subsets_of_size(len(names), k, self.option_values["subsets"]) for k in range(1, len(names))}
        every = [subset for chosen, _ in by_size.values() for subset in chosen]
        # every subset read from one encoding of each modality's items
        trains = ctx.read_subsets(dict(enumerate(train_xs)), every, "represent")
        tests = ctx.read_subsets(dict(enumerate(test_xs)), every, "represent")
        representations = {subset: (tr.cpu().numpy(), te.cpu().numpy()) for subset, tr, te in zip(every, trains, tests)}
        for k, (chosen, total) in by_size.items():
            hits = []
            for subset in chosen:
                train, test = representations[subset]
                predicted = torch.as_tensor(_linear_probe_predictions(train, train_y, test), device=test_y.device)
                hits.append(predicted == test_y)
            mean, se = mean_and_standard_error(hits)
            yield MetricValue(f"latent_acc[k={k}]", mean, {**subset_details(names, chosen, total), "items": len(test_rows),
                                                             "se": se, "chance": chance(data.test.labels)})


class Judged(Metric):
    """A metric read through one family of coherence judges (``mmbench.judges``): the first
    (``cnn``) under the family name, the second (``ridge``) under the name with ``_alt``, so
    that each number can be read beside the other judge's."""

    family_name: str
    #: True: the value is several judges agreeing (joint coherence), not one judge hitting a label
    agreement = False

    def __init__(self, kind: str = "cnn"):
        self.kind = kind
        self.name = self.family_name + judge_family(kind).suffix
        if kind != "cnn":
            self.description = f"{self.description} — judged by the {kind} judges, not the modalities' networks"
            # its own settings, under its own name: a former name belongs to the first family's alone
            self.options = tuple(dataclasses.replace(o, aliases=()) for o in self.options)

    def judged(self, ctx) -> list[int]:
        return [m for m in range(len(ctx.names)) if ctx.judge(m, self.kind) is not None]

    def provenance(self, ctx, *modalities: int) -> dict:
        """Which classifiers judged: {modality: "<family>:<first 16 hex of its content hash>"}."""
        return {"judges": {ctx.names[m]: f"{self.kind}:{ctx.judge(m, self.kind).digest[:16]}" for m in modalities},
                "chance": chance(ctx.data.test.labels, max(1, len(modalities) - 1) if self.agreement else 1)}


class ClassifierAccuracy(Judged):
    family_name = "classifier_acc"
    criterion = "judge"
    higher_is_better = True
    unit = "fraction"
    description = "test accuracy of each modality's coherence judge (read coherence against it)"

    def skip_reason(self, ctx):
        return None if self.judged(ctx) else "no modality has a classifier"

    def evaluate(self, ctx):
        for m in self.judged(ctx):
            yield MetricValue(f"{self.name}[{ctx.names[m]}]", ctx.judge(m, self.kind).test_acc, self.provenance(ctx, m))


class CrossCoherence(Judged):
    family_name = "coherence_cross"
    criterion = "cross coherence"
    higher_is_better = True
    unit = "fraction"
    description = "encode x_a, one sample of q(z|x_a), decode b, judge: share classified as x_a's label"
    # `eval_items`: its name (flag, grid key, run.json key) when the core held it
    options = (Option("items", None, "test pairs cross coherence is computed on (default: all; give both judge "
                               "families the same to judge the same pairs)", type=int, low=1, aliases=("eval_items",)),)

    def skip_reason(self, ctx):
        return None if len(ctx.names) > 1 else "needs two or more modalities"

    @torch.no_grad()
    def evaluate(self, ctx):
        rows = ctx.test_rows(self.option_values["items"])
        xs = ctx.data.test.batch(rows, ctx.names)
        labels = ctx.data.test.labels[rows]
        judged = self.judged(ctx)
        for a, src in enumerate(ctx.names):
            z = ctx.cross_latents({a: xs[a]})
            for b in judged:
                if b == a:
                    continue
                pred = predict(ctx.judge(b, self.kind).net, ctx.decode_means(b, z))
                yield MetricValue(f"{self.name}[{src}->{ctx.names[b]}]", (pred == labels).float().mean().item(),
                                  {"items": len(labels), **self.provenance(ctx, b)})


class JointCoherence(Judged):
    family_name = "coherence_joint"
    criterion = "joint coherence"
    higher_is_better = True
    unit = "fraction"
    description = f"{JOINT_SAMPLES} samples of the prior, every modality decoded and judged: share where all agree"
    agreement = True

    def skip_reason(self, ctx):
        return None if len(self.judged(ctx)) > 1 else "needs two or more modalities with a judge"

    @torch.no_grad()
    def evaluate(self, ctx):
        z = ctx.model.prior().rsample(JOINT_SAMPLES)
        judged = self.judged(ctx)
        preds = torch.stack([predict(ctx.judge(m, self.kind).net, ctx.decode_means(m, z)) for m in judged])
        agree = (preds == preds[0]).all(0).float().mean().item()
        yield MetricValue(self.name, agree, {"items": JOINT_SAMPLES, **self.provenance(ctx, *judged)})


@hookimpl
def register_metrics(register):
    register(LatentAccuracy())
    register(ConditionalCoherence())
    for kind in ("cnn", "ridge"):  # the second judge family's values sit beside the first's
        for metric in (CrossCoherence(kind), JointCoherence(kind), ClassifierAccuracy(kind)):
            register(metric)
