"""mmJSD and MVTCAE proved against their papers' formulas (as MATH.md and the plugins'
docstrings write them).

- Each objective equals a scalar loop transcription of the formula on the same samples, in
  value and in gradient (double precision, the noise recorded from the plugin's own draws).
- Every closed form agrees with a Monte-Carlo estimate: the JS divergence to the dynamic prior,
  the product posterior's KLs to the prior and to each expert; and the dynamic prior and the
  product posterior are the normalised (weighted) products they claim to be.
- The limits that must hold: MVTCAE with α = 0, β = 1 trains the product posterior's ELBO; a JS
  divergence of identical distributions is zero. Decoder passes are counted, not assumed.

References: Sutter, Daunhawer, Vogt, NeurIPS 2020 (mmJSD); Hwang et al., NeurIPS 2021 (MVTCAE).
"""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.distributions import normal_kl, normal_log_prob
from mmbench.errors import MMBenchError
from mmbench.testing import check_posterior
from mmbench_mmjsd import dynamic_prior, jensen_shannon, uniform_weights
from mmbench_mvtcae import conditional_kls, product_posterior
from test_objectives import D, close, grads, run_recorded, small_setup

pytestmark = pytest.mark.usefixtures("single_thread")


def gaussian_kl(loc_a, scale_a, loc_b, scale_b):
    """KL(N(a) ‖ N(b)) of two diagonal Gaussians [D], written out."""
    return 0.5 * ((scale_a / scale_b) ** 2 + ((loc_a - loc_b) / scale_b) ** 2 - 1
                  - 2 * torch.log(scale_a / scale_b)).sum()


def reconstruction(model, xs, b, z):
    """Σ_d λ_d log p_d(x_d | z) of item b at one latent z [D]."""
    return sum(model.weights[d] * model.log_likelihood(d, z[None], xs[d][b:b + 1])[0] for d in range(len(xs)))


# ------------------------------------------------------------------ mmJSD, loop transcription
def loop_mmjsd(model, xs, eps, beta):
    """mmJSD per item: the prior and the experts, their geometric mean f with π = 1/(M+1), the JS
    divergence Σ_j π_j KL(q_j ‖ f), and the reconstruction under the mixture with item b's k-th
    sample from expert (b + k) mod M. Returns (loss, logged value)."""
    experts = model.encode(xs)
    M, K, B = len(xs), eps.shape[1], xs[0].shape[0]
    pi = 1.0 / (M + 1)
    loss, logged = 0.0, 0.0
    for b in range(B):
        locs = [torch.zeros(D, dtype=torch.float64)] + [e.loc[b] for e in experts]
        scales = [torch.ones(D, dtype=torch.float64)] + [e.scale[b] for e in experts]
        precision = sum(pi / s**2 for s in scales)
        loc_f = sum(pi * mu / s**2 for mu, s in zip(locs, scales)) / precision
        scale_f = precision**-0.5
        js = sum(pi * gaussian_kl(mu, s, loc_f, scale_f) for mu, s in zip(locs, scales))
        recon = 0.0
        for k in range(K):
            m = (b + k) % M
            recon = recon + reconstruction(model, xs, b, experts[m].loc[b] + experts[m].scale[b] * eps[0, k, b]) / K
        loss = loss - (recon - beta * js) / B
        logged = logged + (recon - js).detach() / B
    return loss, logged


@pytest.mark.parametrize("beta", [None, 0.7])  # None: the default
@pytest.mark.parametrize("M", [2, 3])
def test_mmjsd_matches_a_loop_transcription(plugins, M, beta):
    posterior = plugins.posteriors.get("mmjsd")
    if beta is not None:
        posterior = posterior.configure(beta=beta)
    model, xs = small_setup(posterior, M=M, K=4, B=3)
    result, autograd, (eps,) = run_recorded(posterior, model, xs, 4, "reparam")
    loss, logged = loop_mmjsd(model, xs, eps, posterior.option_values["beta"])
    assert torch.allclose(result.bound, logged, atol=1e-10)
    assert torch.allclose(result.loss, loss, atol=1e-10)
    assert close(autograd, grads(model, loss))


# ------------------------------------------------------------------ MVTCAE, loop transcription
def loop_mvtcae(model, xs, eps, alpha, beta):
    """MVTCAE per item: the experts' product (no prior expert), K samples of it, and
    ((M−α)/M) recon − β[(α/M) Σ_m KL(q ‖ q_m) + (1−α) KL(q ‖ N(0, I))]. Returns (loss, logged ELBO)."""
    experts = model.encode(xs)
    M, K, B = len(xs), eps.shape[0], xs[0].shape[0]
    zero, one = torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)
    loss, logged = 0.0, 0.0
    for b in range(B):
        precision = sum(e.scale[b] ** -2 for e in experts)
        loc = sum(e.loc[b] * e.scale[b] ** -2 for e in experts) / precision
        scale = precision**-0.5
        kl_prior = gaussian_kl(loc, scale, zero, one)
        kl_conditional = sum(gaussian_kl(loc, scale, e.loc[b], e.scale[b]) for e in experts)
        recon = sum(reconstruction(model, xs, b, loc + scale * eps[k, b]) for k in range(K)) / K
        value = (M - alpha) / M * recon - beta * (alpha / M * kl_conditional + (1 - alpha) * kl_prior)
        loss = loss - value / B
        logged = logged + (recon - kl_prior).detach() / B
    return loss, logged


@pytest.mark.parametrize("options", [{}, {"alpha": 0.3, "beta": 1.5}, {"alpha": 1.0, "beta": 0.5}])
@pytest.mark.parametrize("M", [2, 3])
def test_mvtcae_matches_a_loop_transcription(plugins, M, options):
    posterior = plugins.posteriors.get("mvtcae").configure(**options)
    model, xs = small_setup(posterior, M=M, K=4, B=3)
    result, autograd, (eps,) = run_recorded(posterior, model, xs, 4, "reparam")
    values = posterior.option_values
    loss, logged = loop_mvtcae(model, xs, eps, values["alpha"], values["beta"])
    assert torch.allclose(result.bound, logged, atol=1e-10)
    assert torch.allclose(result.loss, loss, atol=1e-10)
    assert close(autograd, grads(model, loss))


def test_mvtcae_without_conditional_terms_is_the_product_posteriors_elbo(plugins):
    """α = 0, β = 1: the total-correlation objective is the ELBO of q(z|X) (a VAE on the PoE)."""
    posterior = plugins.posteriors.get("mvtcae").configure(alpha=0.0, beta=1.0)
    model, xs = small_setup(posterior, M=3, K=4, B=3)
    torch.manual_seed(0)
    result = posterior.objective(model, xs, 4, "reparam")
    assert torch.allclose(result.loss, -result.bound, atol=1e-12)


# ------------------------------------------------------------------ closed forms against Monte Carlo
def random_gaussians(count, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    locs = torch.randn(count, batch, 3, generator=g, dtype=torch.float64)
    scales = 0.4 + torch.rand(count, batch, 3, generator=g, dtype=torch.float64)
    return locs, scales


def log_density(z, loc, scale):
    return normal_log_prob(z, loc, scale).sum(-1)


def mc_kl(loc_a, scale_a, loc_b, scale_b, n=200_000, seed=1):
    """Monte-Carlo KL(N(a) ‖ N(b)) over z ~ N(a) [B, D]: (mean, standard error), each [B]."""
    g = torch.Generator().manual_seed(seed)
    z = loc_a + scale_a * torch.randn(n, *loc_a.shape, generator=g, dtype=torch.float64)
    terms = log_density(z, loc_a, scale_a) - log_density(z, loc_b, scale_b)
    return terms.mean(0), terms.std(0) / math.sqrt(n)


@pytest.mark.parametrize("weights", [None, torch.tensor([0.1, 0.5, 0.4], dtype=torch.float64)])
def test_jensen_shannon_matches_monte_carlo(weights):
    locs, scales = random_gaussians(3)  # the prior's place (j = 0) held by an arbitrary Gaussian too
    weights = uniform_weights(2, locs) if weights is None else weights
    loc_f, scale_f = dynamic_prior(locs, scales, weights)
    mean, se = 0.0, 0.0
    for j in range(3):
        kl, kl_se = mc_kl(locs[j], scales[j], loc_f, scale_f, seed=j)
        mean, se = mean + weights[j] * kl, se + (weights[j] * kl_se) ** 2
    closed = jensen_shannon(locs, scales, weights)
    assert (closed > 0).all()
    assert ((closed - mean).abs() < 5 * se.sqrt() + 1e-6).all(), (closed, mean)
    # Identical distributions have no divergence among them.
    same = jensen_shannon(locs[:1].expand(3, -1, -1), scales[:1].expand(3, -1, -1), weights)
    assert torch.allclose(same, torch.zeros_like(same), atol=1e-12)


def test_dynamic_prior_is_the_normalised_weighted_geometric_mean():
    """log f(z) − Σ_j π_j log q_j(z) is the same at every z (f ∝ Π q_j^{π_j}), and f is normalised
    by construction (a Gaussian density); the same holds for MVTCAE's product (all powers 1)."""
    locs, scales = random_gaussians(4)
    z = 3 * torch.randn(50, *locs.shape[1:], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for (loc, scale), powers in ((dynamic_prior(locs, scales, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)),
                                  [0.1, 0.2, 0.3, 0.4]),
                                 (product_posterior(locs, scales), [1.0] * 4)):
        gap = log_density(z, loc, scale) - sum(p * log_density(z, locs[j], scales[j]) for j, p in enumerate(powers))
        assert torch.allclose(gap, gap[:1].expand_as(gap), atol=1e-9)


def test_mvtcae_kls_match_monte_carlo():
    locs, scales = random_gaussians(3)
    loc, scale = product_posterior(locs, scales)
    closed = conditional_kls(loc, scale, locs, scales)  # [M, B]
    for m in range(3):
        mean, se = mc_kl(loc, scale, locs[m], scales[m], seed=m)
        assert ((closed[m] - mean).abs() < 5 * se + 1e-6).all(), (m, closed[m], mean)
    # the prior KL the objective uses is the same closed form against N(0, I)
    mean, se = mc_kl(loc, scale, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    closed_prior = normal_kl(loc, scale, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert ((closed_prior - mean).abs() < 5 * se + 1e-6).all()


# ------------------------------------------------------------------ contract, options, cost
@pytest.mark.parametrize("name,options", [("mmjsd", {"beta": 1.0}), ("mvtcae", {"alpha": 0.5, "beta": 1.0})])
def test_configured_posteriors_conform(plugins, name, options):
    posterior = plugins.posteriors.get(name).configure(**options)
    assert check_posterior(posterior) == {2: 2, 3: 3}


@pytest.mark.parametrize("name", ["mmjsd", "mvtcae"])
@pytest.mark.parametrize("M", [2, 3, 4])
def test_decoder_passes_are_counted(plugins, name, M):
    posterior = plugins.posteriors.get(name)
    model, xs = small_setup(posterior, M=M, K=5, B=3)
    before = model.latents_decoded
    result = posterior.objective(model, xs, 5, "reparam")
    assert (model.latents_decoded - before) / (5 * 3) == result.decoder_passes == posterior.decoder_passes(M) == M


@pytest.mark.parametrize("name,values,match", [("mmjsd", {"beta": -1.0}, "beta must be in"),
                                               ("mvtcae", {"alpha": 1.5}, "alpha must be in"),
                                               ("mvtcae", {"alpah": 0.5}, "did you mean 'alpha'")])
def test_options_are_validated(plugins, name, values, match):
    with pytest.raises(MMBenchError, match=match):
        plugins.posteriors.get(name).configure(**values)
