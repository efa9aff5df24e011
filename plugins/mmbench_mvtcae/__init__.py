"""MVTCAE: a product-of-experts joint posterior trained on the total-correlation objective.

In the notation of MATH.md: M Gaussian experts q_m = q(z|x_m), the joint posterior their
normalised product q(z|X) ∝ Π_m q_m(z) (no prior expert, as the authors' code fuses them), the
prior p(z) = N(0, I):

    L = ((M − α)/M) E_{q(z|X)}[Σ_d λ_d log p_d(x_d|z)]
        − β [ (α/M) Σ_m KL(q(z|X) ‖ q_m) + (1 − α) KL(q(z|X) ‖ p(z)) ]

α trades the conditional (cross-view) information bottlenecks against the plain one; α = 0
is a β-VAE on the product posterior. Every KL is between Gaussians, in closed form.
Equation numbers are not cited: the paper's text could not be read here, so the objective is
the one its authors' code trains (gr8joo/MVTCAE: ``run_epochs.py: basic_routine_epoch``,
``calc_klds_cvib``; ``utils/BaseMMVae.py: ivw_fusion``), which matches the paper's summary in
MATH.md. Defaults α = 5/6, β = 2.5 are those of the code's PolyMNIST run (``main_mmnist.py``).

References: Hwang et al. Multi-View Representation Learning via Total
Correlation Objective. NeurIPS 2021.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Option, Posterior
from mmbench.distributions import DiagonalNormal, Factorised, normal_kl, product_of_experts


def product_posterior(locs: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """q(z|X) ∝ Π_m q_m, the experts' normalised product without a prior expert: [E, B, D] -> [B, D]."""
    return product_of_experts(locs, scales, prior_power=0.0)


def conditional_kls(loc: Tensor, scale: Tensor, locs: Tensor, scales: Tensor) -> Tensor:
    """KL(q(z|X) ‖ q_m) for each expert m: joint (loc, scale) [B, D] against experts [M, B, D] -> [M, B]."""
    return normal_kl(loc, scale, locs, scales)


class MVTCAE(Posterior):
    name = "mvtcae"
    description = "MVTCAE: product of Gaussian experts, total-correlation objective (α, β)"
    family = DiagonalNormal()
    items_independent = True  # every term of the objective is per item (mmbench.step)
    estimators = ("reparam",)
    options = (
        Option("alpha", 5 / 6, "α, the share of the conditional KLs KL(q(z|X)‖q_m) (the authors' PolyMNIST run: 5/6)",
               low=0.0, high=1.0),
        Option("beta", 2.5, "β, the weight of all KL terms (the authors' PolyMNIST run: 2.5)", low=0.0),
    )

    def decoder_passes(self, num_modalities):
        # Each decoder once, on K·B samples of the joint posterior.
        return num_modalities

    def condition(self, model, experts, observed):
        locs = torch.stack([experts[m].loc for m in observed])
        scales = torch.stack([experts[m].scale for m in observed])
        return Factorised(model.family, *product_posterior(locs, scales))

    def objective(self, model, xs, K, estimator):
        """L above, per item; logs the joint posterior's ELBO recon − KL(q(z|X) ‖ p(z))."""
        before = model.latents_decoded
        experts = model.encode(xs)
        locs = torch.stack([e.loc for e in experts])  # [M, B, D]
        scales = torch.stack([e.scale for e in experts])
        loc, scale = product_posterior(locs, scales)
        z = model.family.rsample(loc, scale, K)  # [K, B, D]
        recon = sum(w * model.log_likelihood(d, z, x) for d, (x, w) in enumerate(zip(xs, model.weights))).mean(0)
        prior_loc, prior_scale = model.prior_params()
        kl_prior = normal_kl(loc, scale, prior_loc, prior_scale)
        kl_conditional = conditional_kls(loc, scale, locs, scales).sum(0)
        M = len(xs)
        alpha, beta = self.option_values["alpha"], self.option_values["beta"]
        value = (M - alpha) / M * recon - beta * (alpha / M * kl_conditional + (1 - alpha) * kl_prior)
        passes = (model.latents_decoded - before) / (K * xs[0].shape[0])
        return ObjectiveResult(loss=-value.mean(), bound=(recon - kl_prior).mean().detach(), decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(MVTCAE())
