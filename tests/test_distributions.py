"""The density arithmetic against closed forms and direct computations."""

import math

import pytest
import torch

from mmbench.distributions import (DiagonalNormal, Factorised, Mixture, SoftmaxLaplace, log_mean_exp,
                                   normal_kl, product_of_experts)


def test_softmax_laplace_scales_sum_to_latent_dim():
    torch.manual_seed(0)
    family = SoftmaxLaplace()
    raw = torch.randn(7, 20) * 5
    _, scale = family.params(torch.zeros(7, 20), raw)
    assert torch.all(scale > 0)
    assert torch.allclose(scale.sum(-1), torch.full((7,), 20.0), atol=1e-3)
    # The prior follows the same constraint, with location zero.
    prior = family.make_prior(20)
    with torch.no_grad():
        prior.scale_logits.normal_()
    loc, pscale = prior()
    assert torch.all(loc == 0) and abs(pscale.sum().item() - 20) < 1e-4


def test_laplace_log_prob_and_sampler_match_torch():
    torch.manual_seed(0)
    family = SoftmaxLaplace()
    loc, scale = torch.randn(3, 4), torch.rand(3, 4) + 0.1
    z = torch.randn(5, 3, 4)
    expected = torch.distributions.Laplace(loc, scale).log_prob(z).sum(-1)
    assert torch.allclose(family.log_prob(z, loc, scale), expected, atol=1e-5)
    samples = family.rsample(loc, scale, 200_000)
    assert torch.allclose(samples.mean(0), loc, atol=0.03)
    # Laplace variance is 2·scale².
    assert torch.allclose(samples.var(0), 2 * scale**2, rtol=0.05)


def test_log_mean_exp_against_direct():
    x = torch.randn(4, 5, 6)
    direct = torch.log(torch.exp(x).mean(dim=(0, 1)))
    assert torch.allclose(log_mean_exp(x, (0, 1)), direct, atol=1e-6)


def test_mixture_density_against_direct_loop():
    torch.manual_seed(1)
    family = SoftmaxLaplace()
    comps = [Factorised(family, torch.randn(3, 2), torch.rand(3, 2) + 0.2) for _ in range(4)]
    mix = Mixture(comps)
    z = torch.randn(6, 3, 2)
    direct = torch.zeros(6, 3)
    for c in comps:
        direct += torch.distributions.Laplace(c.loc, c.scale).log_prob(z).sum(-1).exp()
    direct = torch.log(direct / len(comps))
    assert torch.allclose(mix.log_prob(z), direct, atol=1e-5)
    assert torch.allclose(mix.mean, torch.stack([c.loc for c in comps]).mean(0))


def test_mixture_samples_each_component_evenly():
    torch.manual_seed(2)
    family = DiagonalNormal()
    comps = [Factorised(family, torch.full((1, 1), v), torch.full((1, 1), 1e-3)) for v in (-5.0, 5.0)]
    z = Mixture(comps).rsample(4000)
    assert abs((z > 0).float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("prior_expert", [True, False])
@pytest.mark.parametrize("mask", [None, torch.tensor([1, 0, 1])])
def test_product_of_experts_matches_closed_form_on_a_grid(mask, prior_expert):
    """The normalised product of the N(0,1) prior (unless left out) and the experts' densities,
    integrated numerically in 1-D, has the mean and variance the closed form gives."""
    locs = torch.tensor([[1.5], [-0.5], [3.0]], dtype=torch.float64)
    scales = torch.tensor([[0.7], [2.0], [1.2]], dtype=torch.float64)
    loc, scale = product_of_experts(locs, scales, mask, prior_expert=prior_expert)
    grid = torch.linspace(-15, 15, 200_001, dtype=torch.float64)
    log_density = -0.5 * grid**2 if prior_expert else torch.zeros_like(grid)
    for e in range(3):
        if mask is None or mask[e]:
            log_density = log_density - 0.5 * ((grid - locs[e, 0]) / scales[e, 0]) ** 2
    density = torch.exp(log_density - log_density.max())
    density = density / torch.trapezoid(density, grid)
    mean = torch.trapezoid(grid * density, grid)
    var = torch.trapezoid((grid - mean) ** 2 * density, grid)
    assert abs(loc.item() - mean.item()) < 1e-6
    assert abs(scale.item() ** 2 - var.item()) < 1e-6


def test_normal_kl_matches_torch():
    loc, scale = torch.randn(3, 5), torch.rand(3, 5) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale),
                                                 torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(normal_kl(loc, scale, torch.zeros(5), torch.ones(5)), expected, atol=1e-5)
    assert math.isclose(normal_kl(torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(2), torch.ones(2)).item(), 0.0, abs_tol=1e-7)
