"""mmbench-mopoe's own tests, as a third-party plugin keeps them: the math against closed
forms, then mmbench's conformance checks (mmbench.testing)."""

import math
import sys
from pathlib import Path

import pytest
import torch

try:
    from mmbench_mopoe import MoPoE  # noqa: F401  (installed)
except ImportError:  # a source checkout, not installed: test the package beside this folder
    sys.modules.pop("mmbench_mopoe", None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mmbench_mopoe  # noqa: E402

from mmbench.distributions import DiagonalNormal, Factorised, Mixture
from mmbench.testing import ToyDataset, check_metric, check_posterior, registered, tiny_context
from mmbench_mopoe import MoPoE, assign_subsets, nonempty_subsets


def test_subsets_are_every_nonempty_subset_once():
    masks = nonempty_subsets(3)
    assert masks.shape == (7, 3) and masks.any(1).all()
    assert len({tuple(r.tolist()) for r in masks}) == 7
    assert masks[[0, 1, 3]].tolist() == torch.eye(3, dtype=torch.bool).tolist()  # singletons at 2^m − 1
    assert masks[-1].all()


def test_systematic_subset_assignment_is_balanced_and_uniform_per_item():
    pick = assign_subsets(20, 7)
    counts = torch.bincount(pick, minlength=7)
    assert counts.max() - counts.min() <= 1
    torch.manual_seed(0)
    first = torch.stack([assign_subsets(5, 7)[0] for _ in range(7000)])
    assert (torch.bincount(first, minlength=7).float() / 7000 - 1 / 7).abs().max() < 0.02


def _experts(M=2, B=3, D=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    locs = torch.randn(M, B, D, generator=gen)
    scales = torch.rand(M, B, D, generator=gen) + 0.3
    return [Factorised(DiagonalNormal(), loc, scale) for loc, scale in zip(locs, scales)]


def _product(experts):
    """The product of N(0, I) and the experts, by hand: precision 1 + Σ σ⁻², mean Σ μ σ⁻² / precision."""
    precision = 1 + sum(e.scale ** -2 for e in experts)
    return sum(e.loc * e.scale ** -2 for e in experts) / precision, precision.rsqrt()


def test_condition_is_the_mixture_of_subset_products():
    experts = _experts()
    q = MoPoE().condition(None, experts, [0, 1])
    assert isinstance(q, Mixture) and len(q.components) == 3
    for component, subset in zip(q.components, ([0], [1], [0, 1])):
        loc, scale = _product([experts[m] for m in subset])
        torch.testing.assert_close(component.loc, loc)
        torch.testing.assert_close(component.scale, scale)
    # a single observed modality: its product with the prior, no mixture
    single = MoPoE().condition(None, experts, [1])
    torch.testing.assert_close(single.loc, _product([experts[1]])[0])


class _NoNoise(DiagonalNormal):
    """Samples are the mean: the objective becomes a deterministic function of its subsets."""

    def rsample(self, loc, scale, n):
        return loc.expand(n, *loc.shape)


def test_objective_estimates_the_average_of_the_subsets_elbos(monkeypatch):
    """Over the offsets of the systematic assignment, the bound averages to
    1/(2^M − 1) Σ_S { Σ_d λ_d log p_d(x_d | z_S) − KL(q̃_S || N(0, I)) }, every S reconstructing
    every modality — computed here subset by subset, with the Gaussian KL written out."""
    posterior = MoPoE()
    posterior.family = _NoNoise()
    dataset = ToyDataset(3)
    torch.manual_seed(0)
    model = posterior.build_model(dataset.modalities, 4)
    B = 5
    xs = dataset.load().train.batch(torch.arange(B), model.names)
    S = 7
    bounds = []
    for offset in range(S):
        monkeypatch.setattr(mmbench_mopoe, "assign_subsets", lambda b, s, device=None, r=offset: (torch.arange(b) + r) % s)
        bounds.append(posterior.objective(model, xs, 2, "reparam").bound)

    with torch.no_grad():
        experts = model.encode(xs)
        elbos = []
        for mask in nonempty_subsets(3):
            loc, scale = _product([e for e, keep in zip(experts, mask) if keep])
            recon = sum(w * model.log_likelihood(d, loc, x) for d, (x, w) in enumerate(zip(xs, model.weights)))
            kl = 0.5 * (scale ** 2 + loc ** 2 - 1 - torch.log(scale ** 2)).sum(-1)
            elbos.append(recon - kl)
        expected = torch.stack(elbos).mean(0).mean()
    torch.testing.assert_close(torch.stack(bounds).mean(), expected, rtol=1e-5, atol=1e-3)
    assert len({round(b.item(), 3) for b in bounds}) > 1  # the offsets do pick other subsets


def test_bound_lies_below_the_mixture_elbo():
    """The average of the subsets' ELBOs lower-bounds the ELBO of the mixture q_Φ itself
    (Sutter et al. 2021): checked by Monte Carlo with a common decoder-free toy log-joint."""
    torch.manual_seed(0)
    experts = _experts(M=3, B=1, D=2)
    q = MoPoE().condition(None, experts, [0, 1, 2])
    log_joint = lambda z: -0.5 * ((z - 1.5) ** 2).sum(-1) - math.log(2 * math.pi)  # noqa: E731
    n = 20_000
    z = q.rsample(n)
    mixture_elbo = (log_joint(z) - q.log_prob(z)).mean()
    component_elbos = []
    for c in q.components:
        zc = c.rsample(n)
        component_elbos.append((log_joint(zc) - c.log_prob(zc)).mean())
    stratified = torch.stack(component_elbos).mean()
    standard_error = 3 * (log_joint(z) - q.log_prob(z)).std() / math.sqrt(n)
    assert stratified < mixture_elbo - standard_error


def test_mopoe_conforms():
    (posterior,) = registered(mmbench_mopoe)["posteriors"]
    assert check_posterior(posterior) == {2: 2.0, 3: 3.0}  # M passes: linear in M, not 2^M − 1


def test_a_metric_runs_on_a_tiny_mopoe_model():
    from mmbench.api import Metric, MetricValue

    class PosteriorSpread(Metric):
        name = "spread"
        criterion = "smoke"
        unit = "nats"
        higher_is_better = False
        description = "mean log-density of the joint posterior at its own samples"

        def evaluate(self, ctx):
            xs = ctx.data.test.batch(ctx.test_rows(32), ctx.names)
            q = ctx.model.condition(xs, list(range(len(xs))))
            yield MetricValue("spread", q.log_prob(q.rsample(4)).mean().item())

    values = check_metric(PosteriorSpread(), tiny_context(MoPoE()))
    assert [v.name for v in values] == ["spread"]


def test_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="no estimator 'dreg'"):
        MoPoE().objective(None, [], 1, "dreg")
