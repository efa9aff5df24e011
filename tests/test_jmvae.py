"""jmvae (JMVAE-kl, Suzuki, Nakayama, Matsuo 2016) against its formula and its contract.

- The objective equals a scalar loop transcription of L_JMkl = E_{q(z|X)}[Σ λ log p(x|z)]
  − KL(q(z|X) ‖ p) − α Σ_m KL(q(z|X) ‖ q(z|x_m)) in value and gradient on the same samples;
  the logged bound is L_JM (α's terms left out).
- Each closed-form KL it uses equals a Monte-Carlo estimate on the model's own posteriors.
- α = 0 (JMVAE-zero) leaves the unimodal encoders untrained; condition picks the joint encoder,
  a unimodal one, or the experts' product, by what is observed.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.distributions import normal_kl
from mmbench.testing import check_posterior
from test_objectives import LinearGaussian, close, grads, run_recorded

pytestmark = pytest.mark.usefixtures("single_thread")

D = 3


def setup(plugins, M=2, B=2, seed=0, **options):
    posterior = plugins.posteriors.get("jmvae").configure(**options)
    torch.manual_seed(seed)
    mods = [LinearGaussian(f"x{i}", n, weight=w) for i, n, w in zip(range(M), (3, 2, 4), (1.5, 1.0, 0.5))]
    model = posterior.build_model(mods, D).double()
    g = torch.Generator().manual_seed(seed + 7)
    xs = [torch.randn(B, *m.shape, generator=g, dtype=torch.float64) for m in mods]
    return posterior, model, xs


def kl_normal_loop(loc, scale, loc2, scale2):
    """KL(N(loc, scale²) ‖ N(loc2, scale2²)) summed over dimensions, one term at a time."""
    return sum(torch.log(scale2[i] / scale[i]) + (scale[i] ** 2 + (loc[i] - loc2[i]) ** 2) / (2 * scale2[i] ** 2) - 0.5
               for i in range(len(loc)))


def loop_objective(model, xs, eps, alpha):
    """(mean over items of L_JMkl, mean of L_JM) written out per item b and sample k."""
    K, B, M = eps.shape[0], xs[0].shape[0], len(xs)
    joint = model.joint(xs)
    experts = model.encode(xs)
    zero, one = torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)
    total, elbo_total = 0.0, 0.0
    for b in range(B):
        loc, scale = joint.loc[b], joint.scale[b]
        recon = 0.0
        for k in range(K):
            z = loc + scale * eps[k, b]
            for d in range(M):
                recon = recon + model.weights[d] * model.log_likelihood(d, z[None], xs[d][b:b + 1])[0] / K
        elbo = recon - kl_normal_loop(loc, scale, zero, one)
        pull = sum(kl_normal_loop(loc, scale, e.loc[b], e.scale[b]) for e in experts)
        total = total + (elbo - alpha * pull) / B
        elbo_total = elbo_total + elbo.detach() / B
    return total, elbo_total


@pytest.mark.parametrize("M", [2, 3])
def test_the_objective_matches_a_loop_transcription(plugins, M):
    posterior, model, xs = setup(plugins, M=M, alpha=0.7)
    result, autograd, (eps,) = run_recorded(posterior, model, xs, 4, "reparam")
    value, elbo = loop_objective(model, xs, eps, alpha=0.7)
    assert torch.allclose(result.loss, -value, atol=1e-10)
    assert torch.allclose(result.bound, elbo, atol=1e-10)  # logged: L_JM, the joint encoder's ELBO
    assert close(autograd, grads(model, -value))
    # every network is trained: joint encoder, unimodal encoders (through α's KLs), decoders
    assert all(g.abs().sum() > 0 for g in autograd)


def test_alpha_zero_is_jmvae_zero(plugins):
    posterior, model, xs = setup(plugins, alpha=0.0)
    torch.manual_seed(0)
    result = posterior.objective(model, xs, 2, "reparam")
    assert torch.allclose(result.loss, -result.bound)
    result.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoders.parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.joint_encoder.parameters())


@torch.no_grad()
def test_closed_form_kls_match_monte_carlo(plugins):
    _, model, xs = setup(plugins, M=2, B=3)
    joint = model.joint(xs)
    targets = [("prior", *model.prior_params())] + [(f"q_{m}", e.loc, e.scale) for m, e in enumerate(model.encode(xs))]
    torch.manual_seed(0)
    z = model.family.rsample(joint.loc, joint.scale, 200_000)
    for name, loc, scale in targets:
        log_ratio = model.family.log_prob(z, joint.loc, joint.scale) - model.family.log_prob(z, loc, scale)  # [S, B]
        mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
        closed = normal_kl(joint.loc, joint.scale, loc, scale)
        assert ((closed - mc).abs() < 4 * se + 1e-6).all(), (name, closed, mc, se)


@torch.no_grad()
def test_condition_picks_the_encoder_by_what_is_observed(plugins):
    _, model, xs = setup(plugins, M=3, B=4)
    experts = model.encode(xs)
    joint = model.joint(xs)
    assert torch.equal(model.condition(xs, [0, 1, 2]).loc, joint.loc)
    alone = model.condition([None, xs[1], None], [1])
    assert torch.equal(alone.loc, experts[1].loc) and torch.equal(alone.scale, experts[1].scale)
    # a pair of three: the product of the two unimodal Gaussians, no prior expert
    pair = model.condition([xs[0], None, xs[2]], [0, 2])
    precision = experts[0].scale ** -2 + experts[2].scale ** -2
    assert torch.allclose(pair.scale, precision.rsqrt())
    assert torch.allclose(pair.loc, (experts[0].loc * experts[0].scale ** -2 + experts[2].loc * experts[2].scale ** -2)
                          / precision)
    assert model.represent(xs, [0, 1, 2]).shape == (4, D) and model.cross_latents([xs[0], None, None], [0]).shape == (4, D)


def test_conforms_with_m_decoder_passes(plugins):
    posterior = plugins.posteriors.get("jmvae")
    assert posterior.option_values == {"alpha": 0.1}
    assert check_posterior(posterior) == {2: 2, 3: 3}
    for M in (2, 3):
        _, model, xs = setup(plugins, M=M, B=3)
        before = model.latents_decoded
        result = posterior.objective(model, xs, 5, "reparam")
        assert (model.latents_decoded - before) / 15 == result.decoder_passes == M
