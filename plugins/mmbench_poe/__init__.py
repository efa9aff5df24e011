"""Product-of-experts joint posterior (MVAE).

References: Wu, Goodman. Multimodal Generative Models for Scalable Weakly-Supervised
Learning. NeurIPS 2018.
"""

from __future__ import annotations

import torch

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Posterior
from mmbench.distributions import DiagonalNormal, Factorised, normal_kl, product_of_experts


def training_subsets(num_modalities: int, device=None) -> torch.Tensor:
    """MVAE's subsets for fully observed data: the full set, then each modality alone. [S, M]."""
    full = torch.ones(1, num_modalities, dtype=torch.bool, device=device)
    singles = torch.eye(num_modalities, dtype=torch.bool, device=device)
    return torch.cat([full, singles]) if num_modalities > 1 else full


class PoE(Posterior):
    name = "poe"
    by_default = True
    description = "MVAE product of Gaussian experts with a prior expert; full-set + unimodal ELBOs"
    family = DiagonalNormal()
    items_independent = True  # every term of the objective is per item (mmbench.step)
    estimators = ("reparam",)

    def decoder_passes(self, num_modalities):
        # The full set reconstructs every modality, each single subset its own one.
        return num_modalities + (num_modalities if num_modalities > 1 else 0)

    def condition(self, model, experts, observed):
        locs = torch.stack([experts[m].loc for m in observed])
        scales = torch.stack([experts[m].scale for m in observed])
        return Factorised(self.family, *product_of_experts(locs, scales))

    def objective(self, model, xs, K, estimator):
        """Σ over subsets S of ELBO_S = E_{q_S}[Σ_{d∈S} λ_d log p_d(x_d|z)] − KL(q_S || N(0, I)),
        where q_S is the product of the prior expert and the experts in S."""
        before = model.latents_decoded
        experts = model.encode(xs)
        locs = torch.stack([e.loc for e in experts])[:, None]  # [M, 1, B, D]
        scales = torch.stack([e.scale for e in experts])[:, None]
        subsets = training_subsets(len(xs), locs.device)  # [S, M]
        loc_s, scale_s = product_of_experts(locs, scales, subsets.T)  # [S, B, D]
        z = self.family.rsample(loc_s, scale_s, K).transpose(0, 1)  # [S, K, B, D]
        # Which subsets contain d is known on the host (no device sync); one decoder call per d.
        members = training_subsets(len(xs)).T.tolist()  # [M][S]
        recon = [0.0] * z.shape[0]
        for d, (x, weight) in enumerate(zip(xs, model.weights)):
            rows = [s for s, member in enumerate(members[d]) if member]
            loglik = weight * model.log_likelihood(d, torch.stack([z[s] for s in rows]), x)
            for i, s in enumerate(rows):
                recon[s] = recon[s] + loglik[i]
        recon = torch.stack(recon)  # [S, K, B]
        prior_loc, prior_scale = model.prior_params()
        elbos = recon.mean(1) - normal_kl(loc_s, scale_s, prior_loc, prior_scale)  # [S, B]
        passes = (model.latents_decoded - before) / (K * xs[0].shape[0])
        return ObjectiveResult(loss=-elbos.sum(0).mean(), bound=elbos[0].mean().detach(), decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(PoE())
