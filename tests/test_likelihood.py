"""Table 3's log-likelihoods: the estimator against exact marginals of a toy model whose
log p(x) is known (1-d latent, computed by quadrature), and loglik[m|m] against a direct
unimodal IWAE computation."""

import math

import pytest
import torch
from torch import nn

from mmbench.api import Dataset, Modality, PairedData, Split
from mmbench.distributions import normal_log_prob
from mmbench.evaluation import EvalContext
from mmbench_likelihood import LogLikelihood, proposal_sets
from mmbench_likelihood.estimate import log_marginals

pytestmark = pytest.mark.usefixtures("single_thread")

NOISE = 0.8


class LinearGaussian(Modality):
    """x = w·z + b + N(0, NOISE²) in 2 dimensions, with an encoder that is roughly right
    (so that importance sampling converges) but not exact (so that the sample count matters)."""

    shape = (2,)

    def __init__(self, name, w, b, enc):
        self.name, self.w, self.b, self.enc = name, torch.tensor(w), torch.tensor(b), torch.tensor(enc)

    def encoder(self, latent_dim):
        enc = nn.Linear(2, 2 * latent_dim)
        with torch.no_grad():
            enc.weight.copy_(torch.stack([self.enc, torch.zeros(2)]))
            enc.bias.copy_(torch.tensor([0.1, 1.0]))  # a scale wider than the true posterior's
        return enc

    def decoder(self, latent_dim):
        dec = nn.Linear(latent_dim, 2)
        with torch.no_grad():
            dec.weight.copy_(self.w[:, None])
            dec.bias.copy_(self.b)
        return dec

    def log_likelihood(self, out, x):
        return normal_log_prob(x, out, NOISE).sum(-1)


MODALITIES = [LinearGaussian("a", [1.0, -0.5], [0.2, 0.0], [0.45, -0.2]),
              LinearGaussian("b", [0.7, 0.9], [0.0, -0.3], [0.3, 0.35])]


class Toy(Dataset):
    name = "toy"

    @property
    def modalities(self):
        return MODALITIES


def toy_model(posterior):
    torch.manual_seed(0)
    return posterior.build_model(MODALITIES, 1).eval()


def toy_data(model, n=24):
    """n pairs drawn from the model itself."""
    gen = torch.Generator().manual_seed(1)
    z = model.prior().rsample(n)  # [n, 1]
    xs = [m.w * z + m.b + NOISE * torch.randn(n, 2, generator=gen) for m in MODALITIES]
    index = torch.arange(n)[:, None].expand(n, 2)
    labels = torch.zeros(n, dtype=torch.long)
    split = Split({"a": xs[0], "b": xs[1]}, {"a": labels, "b": labels}, index, labels)
    return PairedData(split, split)


@torch.no_grad()
def exact_log_marginal(model, xs, target):
    """log p(x_T) = log ∫ p(z) Π_{d∈T} p(x_d|z) dz by the trapezoid-free Riemann sum on a fine grid."""
    grid = torch.linspace(-30, 30, 60001, dtype=torch.float64)[:, None, None]  # [G, 1, 1]
    prior = model.prior()
    log_joint = prior.family.log_prob(grid, prior.loc.double(), prior.scale.double())  # [G, 1]
    for d in target:
        m = MODALITIES[d]
        log_joint = log_joint + normal_log_prob(xs[d].double(), grid * m.w.double() + m.b.double(), NOISE).sum(-1)
    return torch.logsumexp(log_joint, 0) + math.log(grid[1, 0, 0] - grid[0, 0, 0])


@pytest.mark.parametrize("posterior_name", ["moe", "poe"])
def test_iwae_estimate_converges_to_the_exact_log_marginal(plugins, posterior_name):
    posterior = plugins.posteriors.get(posterior_name)
    model = toy_model(posterior)
    data = toy_data(model)
    xs = [data.test.pools["a"], data.test.pools["b"]]
    experts = model.encode(xs)
    for observed, target in (((0, 1), (0, 1)), ((0, 1), (0,)), ((1,), (1,)), ((0,), (1,))):
        exact = exact_log_marginal(model, xs, target)
        q = posterior.condition(model, experts, list(observed))
        errors = {}
        for samples in (2, 20, 20000):
            torch.manual_seed(samples)
            estimate = log_marginals(model, q, xs, [target], samples)[target].double()
            errors[samples] = (estimate - exact).abs().mean().item()
        assert errors[20000] < 0.03, (observed, target, errors)
        assert errors[20000] < errors[20] < errors[2], (observed, target, errors)
        # IWAE is a lower bound in expectation: averaged over many draws, a small K falls short.
        torch.manual_seed(0)
        small = torch.stack([log_marginals(model, q, xs, [target], 2)[target] for _ in range(50)]).mean(0)
        assert (small.double() - exact).mean() < 0, (observed, target)


def test_chunked_sampling_is_the_same_estimator(plugins):
    """Memory is bounded by chunks; a tiny budget must give the same estimate up to MC noise."""
    posterior = plugins.posteriors.get("moe")
    model = toy_model(posterior)
    data = toy_data(model)
    xs = [data.test.pools["a"], data.test.pools["b"]]
    q = posterior.condition(model, model.encode(xs), [0, 1])
    exact = exact_log_marginal(model, xs, (0, 1))
    estimate = log_marginals(model, q, xs, [(0, 1)], 2000, budget=100)[(0, 1)]
    assert (estimate.double() - exact).abs().mean() < 0.03


def _ctx(plugins, posterior_name):
    posterior = plugins.posteriors.get(posterior_name)
    model = toy_model(posterior)
    return EvalContext(dataset=Toy(), data=toy_data(model), model=model, posterior=posterior, device=torch.device("cpu"))


@pytest.mark.parametrize("posterior_name", ["moe", "poe"])
def test_loglik_m_given_m_equals_a_direct_unimodal_iwae(plugins, posterior_name):
    ctx = _ctx(plugins, posterior_name)
    torch.manual_seed(3)
    values = {v.name: v for v in LogLikelihood().configure(samples=50, items=10).evaluate(ctx)}
    # The metric's first draws are those of q(z|x_a); the same seed gives the same samples.
    torch.manual_seed(3)
    rows = ctx.test_rows(10)
    x = ctx.data.test.pools["a"][rows]
    q = ctx.posterior.condition(ctx.model, ctx.model.encode([x, None]), [0])
    z = q.rsample(50)
    log_w = ctx.model.prior().log_prob(z) + ctx.model.log_likelihood(0, z, x) - q.log_prob(z)
    per_item = torch.logsumexp(log_w, 0) - math.log(50)
    assert values["loglik[a|a]"].value == pytest.approx(per_item.mean().item(), abs=1e-4)
    se = per_item.std().item() / math.sqrt(10)
    assert values["loglik[a|a]"].details == {"samples": 50, "samples_per_expert": 50, "estimator": "iwae", "items": 10,
                                            "se": pytest.approx(se, rel=1e-4)}


def test_every_table3_entry_and_synergy(plugins):
    ctx = _ctx(plugins, "moe")
    values = {v.name: v for v in LogLikelihood().configure(samples=40, items=8).evaluate(ctx)}
    assert set(values) == {"loglik[a|a]", "loglik[b|a]", "loglik[a|b]", "loglik[b|b]", "loglik[a,b]",
                           "loglik[a|a,b]", "loglik[b|b,a]", "synergy[a|a,b]", "synergy[b|b,a]"}
    assert values["synergy[a|a,b]"].value == pytest.approx(values["loglik[a|a,b]"].value - values["loglik[a|a]"].value)
    # MoE's joint estimate is Eq. 5's over stratified samples: half the samples from each expert.
    assert values["loglik[a,b]"].details["estimator"] == "eq5-stratified"
    assert values["loglik[a,b]"].details["samples_per_expert"] == 20
    assert all(math.isfinite(v.value) for v in values.values())


@pytest.mark.parametrize("posterior_name", ["moe", "poe"])
def test_pairs_reuse_the_single_experts_draws_where_they_are_its_components(plugins, posterior_name):
    """MoE's pair proposal is a mixture of the two single experts: its estimate takes their draws
    (no decoding of its own) and still converges to the exact marginal. PoE's is a new
    distribution: drawn and decoded afresh, so its values are those of the estimator alone."""
    ctx = _ctx(plugins, posterior_name)
    xs = ctx.data.test.batch(ctx.test_rows(4), ctx.names)
    before = ctx.model.latents_decoded
    torch.manual_seed(0)
    values = LogLikelihood().estimates(ctx, xs, 2000)
    decoded = ctx.model.latents_decoded - before
    singles = 2 * 2 * 2000 * 4  # each expert's draws, decoded by both decoders
    assert decoded == (singles if posterior_name == "moe" else singles + 2 * 2000 * 4)
    exact = exact_log_marginal(ctx.model, xs, (0, 1))
    assert (values[((0, 1), (0, 1))][0].double() - exact).abs().mean() < 0.05
    # Without the bank (each proposal on its own; the items are one batch), PoE draws the same
    # samples in the same order.
    torch.manual_seed(0)
    alone = {}
    for observed, targets in proposal_sets(2):
        q = ctx.model.condition([x if m in observed else None for m, x in enumerate(xs)], list(observed))
        alone.update({(t, observed): v for t, v in log_marginals(ctx.model, q, xs, targets, 2000).items()})
    same = [torch.equal(values[key][0], alone[key]) for key in alone]
    assert all(same) if posterior_name == "poe" else same.count(False) == 3  # moe: the pair's three differ
