"""The MMVAE paper's criteria as metrics (paper §4): latent factorisation (Table 1), joint and
cross coherence (Table 2), and the judges' own accuracy beside them; with three modalities or
more, the same read from subsets of them (:mod:`mmbench_metrics.subsets`)."""

from __future__ import annotations

import torch

from mmbench import hookimpl
from mmbench.api import Metric, MetricValue, Option
from mmbench.judges import predict

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
            yield MetricValue(f"latent_acc[{name}]", acc)
        if len(ctx.names) > 1:
            gen = torch.Generator().manual_seed(0)
            train_rows = torch.randperm(len(data.train), generator=gen)[:LATENT_PROBE_ITEMS].to(ctx.device)
            test_rows = ctx.test_rows(LATENT_PROBE_ITEMS)
            feats = []
            for split, rows in ((data.train, train_rows), (data.test, test_rows)):
                xs = split.batch(rows, ctx.names)
                feats.append((ctx.representations(dict(enumerate(xs))).cpu().numpy(), split.labels[rows].cpu().numpy()))
            yield MetricValue("latent_acc[joint]", _linear_probe_accuracy(*feats[0], *feats[1]))
            if len(ctx.names) > 2:
                yield from self.from_subsets(ctx, train_rows, test_rows)

    def from_subsets(self, ctx, train_rows, test_rows):
        """``latent_acc[k=<k>]``: the probe given each subset of k modalities (k = 1..M-1; k = M
        is ``latent_acc[joint]``), fitted and scored on the same pairs as the joint one."""
        data, names = ctx.data, ctx.names
        train_xs, test_xs = data.train.batch(train_rows, names), data.test.batch(test_rows, names)
        train_y, test_y = data.train.labels[train_rows].cpu().numpy(), data.test.labels[test_rows]
        for k in range(1, len(names)):
            chosen, total = subsets_of_size(len(names), k, self.option_values["subsets"])
            hits = []
            for subset in chosen:
                train = ctx.representations({m: train_xs[m] for m in subset}).cpu().numpy()
                test = ctx.representations({m: test_xs[m] for m in subset}).cpu().numpy()
                predicted = torch.as_tensor(_linear_probe_predictions(train, train_y, test), device=test_y.device)
                hits.append(predicted == test_y)
            mean, se = mean_and_standard_error(hits)
            yield MetricValue(f"latent_acc[k={k}]", mean, {**subset_details(names, chosen, total),
                                                             "items": len(test_rows), "se": se})


class ClassifierAccuracy(Metric):
    name = "classifier_acc"
    criterion = "judge"
    higher_is_better = True
    unit = "fraction"
    description = "test accuracy of each modality's coherence judge (read coherence against it)"

    def skip_reason(self, ctx):
        return None if any(ctx.judge(m) for m in range(len(ctx.names))) else "no modality has a classifier"

    def evaluate(self, ctx):
        for m, name in enumerate(ctx.names):
            judge = ctx.judge(m)
            if judge is not None:
                yield MetricValue(f"classifier_acc[{name}]", judge[1])


class CrossCoherence(Metric):
    name = "coherence_cross"
    criterion = "cross coherence"
    higher_is_better = True
    unit = "fraction"
    description = "encode x_a, one sample of q(z|x_a), decode b, judge: share classified as x_a's label"
    # `eval_items`: its name (flag, grid key, run.json key) when the core held it
    options = (Option("items", None, "test pairs cross coherence is computed on (default: all)", type=int, low=1,
                      aliases=("eval_items",)),)

    def skip_reason(self, ctx):
        return None if len(ctx.names) > 1 else "needs two or more modalities"

    @torch.no_grad()
    def evaluate(self, ctx):
        rows = ctx.test_rows(self.option_values["items"])
        xs = ctx.data.test.batch(rows, ctx.names)
        labels = ctx.data.test.labels[rows]
        for a, src in enumerate(ctx.names):
            z = ctx.cross_latents({a: xs[a]})
            for b, dst in enumerate(ctx.names):
                judge = ctx.judge(b)
                if b == a or judge is None:
                    continue
                pred = predict(judge[0], ctx.decode_means(b, z))
                yield MetricValue(f"coherence_cross[{src}->{dst}]", (pred == labels).float().mean().item())


class JointCoherence(Metric):
    name = "coherence_joint"
    criterion = "joint coherence"
    higher_is_better = True
    unit = "fraction"
    description = f"{JOINT_SAMPLES} samples of the prior, every modality decoded and judged: share where all agree"

    def skip_reason(self, ctx):
        judged = [m for m in range(len(ctx.names)) if ctx.judge(m) is not None]
        return None if len(judged) > 1 else "needs two or more modalities with a judge"

    @torch.no_grad()
    def evaluate(self, ctx):
        z = ctx.model.prior().rsample(JOINT_SAMPLES)
        preds = [predict(ctx.judge(m)[0], ctx.decode_means(m, z)) for m in range(len(ctx.names))
                 if ctx.judge(m) is not None]
        preds = torch.stack(preds)
        agree = (preds == preds[0]).all(0).float().mean().item()
        yield MetricValue("coherence_joint", agree)


@hookimpl
def register_metrics(register):
    for metric in (LatentAccuracy(), CrossCoherence(), ConditionalCoherence(), JointCoherence(), ClassifierAccuracy()):
        register(metric)
