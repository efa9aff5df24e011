"""mmJSD: reconstruction under the mixture of the unimodal posteriors, regularised by the
multimodal Jensen–Shannon divergence to a dynamic prior (the shared-latent version).

In the notation of MATH.md: M Gaussian experts q_m = q(z|x_m), the prior p(z) = N(0, I) (written
q_0 below), weights π_0..π_M (uniform, 1/(M+1), as the paper and its code set them):

    joint posterior   q(z|X) = Σ_m (1/M) q_m(z)          (the mixture; the prior takes no share)
    dynamic prior     f(z|X) ∝ Π_{j=0}^{M} q_j(z)^{π_j}  (the weighted geometric mean, Gaussian)
    JS_π(q_1..q_M, p) = Σ_{j=0}^{M} π_j KL(q_j ‖ f)       (every KL between Gaussians, exact)
    L = E_{q(z|X)}[Σ_d λ_d log p_d(x_d|z)] − β · JS_π

The paper also has a variant with modality-specific (private) latents; this is the
shared-latent one. Equation numbers are not cited: the paper's text could not be read here, so
the formulas follow its definitions (the JS divergence of M+1 distributions, the dynamic prior
as their geometric mean) as the authors' code computes them (thomassutter/mmjsd:
``divergence_measures/mm_div.py: calc_alphaJSD_modalities, alpha_poe``;
``utils/utils.py: mixture_component_selection``).

The reconstruction draws each latent from one expert of the mixture, chosen by a fixed
stratification over the batch (item b's k-th sample from expert (b + k) mod M) as the code's
``mixture_component_selection`` splits a batch among the experts: each decoder runs once, on
K·B latents (M decoder passes), and since batches are shuffled every item meets every expert in
expectation. β = 2.5 is the value of the authors' MNIST–SVHN–Text run (``job_mst.sh``; the
code's flag default is 5).

References: Sutter, Daunhawer, Vogt. Multimodal Generative Learning Utilizing
Jensen-Shannon-Divergence. NeurIPS 2020.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Option, Posterior
from mmbench.distributions import DiagonalNormal, Mixture, normal_kl, product_of_experts


def uniform_weights(num_modalities: int, like: Tensor) -> Tensor:
    """π_0..π_M = 1/(M+1): the prior first, then one per modality. [M+1]."""
    return torch.full((num_modalities + 1,), 1.0 / (num_modalities + 1), dtype=like.dtype, device=like.device)


def dynamic_prior(locs: Tensor, scales: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """f ∝ Π_j q_j^{π_j}, the weighted geometric mean of the distributions j = 0..M (the prior
    first) given as ``locs``/``scales`` [M+1, B, D] with ``weights`` π [M+1]: its (loc, scale) [B, D]."""
    return product_of_experts(locs, scales, weights, prior_power=0.0)


def jensen_shannon(locs: Tensor, scales: Tensor, weights: Tensor) -> Tensor:
    """JS_π = Σ_j π_j KL(q_j ‖ f) to the dynamic prior f, for the distributions j = 0..M (the
    prior first) given as ``locs``/``scales`` [M+1, B, D] with ``weights`` π [M+1]: [B]."""
    loc_f, scale_f = dynamic_prior(locs, scales, weights)
    return (weights[:, None] * normal_kl(locs, scales, loc_f, scale_f)).sum(0)


def mixture_strata(K: int, batch: int, num_modalities: int, device=None) -> Tensor:
    """Which expert each reconstruction sample comes from: (b + k) mod M for item b, sample k. [K, B]."""
    k = torch.arange(K, device=device)[:, None]
    b = torch.arange(batch, device=device)[None, :]
    return (b + k) % num_modalities


class MMJSD(Posterior):
    name = "mmjsd"
    description = "mmJSD: mixture of Gaussian experts, JS divergence to a dynamic prior (their geometric mean)"
    family = DiagonalNormal()
    # not split into micro-batches (mmbench.step): item b's k-th sample comes from expert (b + k) mod M,
    # a stratification over the batch's positions, which chunks would change (K < M: biased)
    items_independent = False
    estimators = ("reparam",)
    options = (Option("beta", 2.5, "weight β of the JS divergence (the authors' MNIST–SVHN–Text run: 2.5)", low=0.0),)

    def decoder_passes(self, num_modalities):
        # Each latent comes from one expert, and each decoder runs once on all K·B of them.
        return num_modalities

    def condition(self, model, experts, observed):
        # The paper's joint posterior: the uniform mixture of the observed experts (its code's
        # cross generation from one modality samples that expert, from a subset their mixture).
        return Mixture([experts[m] for m in observed])

    def objective(self, model, xs, K, estimator):
        """β-weighted L above, per item; logs recon − JS_π (β = 1), the paper's objective."""
        before = model.latents_decoded
        experts = model.encode(xs)
        locs = torch.stack([e.loc for e in experts])  # [M, B, D]
        scales = torch.stack([e.scale for e in experts])
        M, B = locs.shape[:2]
        strata = mixture_strata(K, B, M, locs.device)
        items = torch.arange(B, device=locs.device)
        z = model.family.rsample(locs[strata, items], scales[strata, items], 1)[0]  # [K, B, D]
        recon = sum(w * model.log_likelihood(d, z, x) for d, (x, w) in enumerate(zip(xs, model.weights))).mean(0)
        prior_loc, prior_scale = model.prior_params()
        with_prior = (torch.cat([prior_loc.expand_as(locs[:1]), locs]),
                      torch.cat([prior_scale.expand_as(scales[:1]), scales]))
        js = jensen_shannon(*with_prior, uniform_weights(M, locs))
        passes = (model.latents_decoded - before) / (K * B)
        beta = self.option_values["beta"]
        return ObjectiveResult(loss=-(recon - beta * js).mean(), bound=(recon - js).mean().detach(),
                               decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(MMJSD())
