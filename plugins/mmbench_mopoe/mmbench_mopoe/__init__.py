"""MoPoE, the mixture of products of experts, as an mmbench posterior.

The joint posterior is a uniform mixture, over every non-empty subset S of the M modalities,
of the product of that subset's experts (with the prior expert, as in MVAE):

    q_Φ(z | X) = 1/(2^M − 1) Σ_{S ≠ ∅} q̃_S(z | X_S),    q̃_S ∝ p(z) Π_{m ∈ S} q_m(z | x_m)

so it holds the MoE of single modalities (MMVAE) and the PoE of all of them (MVAE) as
components. Its training objective, the generalized multimodal ELBO, is

    L = 1/(2^M − 1) Σ_S { E_{q̃_S}[Σ_d λ_d log p_d(x_d | z)] − KL(q̃_S || p(z)) }

every subset reconstructing *every* modality. It lower-bounds the ELBO of the mixture itself
(the paper bounds KL(q_Φ || p) by the components' average KL; equivalently, a mixture's entropy
is at least its components' average), hence log p(X).

Cost. The KLs of all 2^M − 1 subsets are Gaussian closed forms, computed exactly for every
item. The reconstruction term is estimated as the authors' code does (it hands slices of the
batch to the mixture's components): each item reconstructs from a single subset, chosen by
systematic sampling — a random offset, then the subsets in turn along the batch — so every
item's subset is uniform and the estimate unbiased. Each decoder then runs once per step on
K·B latents: M decoder passes, linear in M although the subsets grow as 2^M.

This package is the worked example of a third-party plugin (docs/plugins.md): its own
distribution, ``mmbench-mopoe``, found through the ``mmbench`` entry-point group, never
imported by the core. The density arithmetic is mmbench's own (product_of_experts, Mixture,
normal_kl), written once there.

References: Sutter, Daunhawer, Vogt. Generalized Multimodal ELBO. ICLR 2021.
Wu, Goodman. Multimodal Generative Models for Scalable Weakly-Supervised Learning. NeurIPS 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Posterior
from mmbench.distributions import DiagonalNormal, Factorised, Mixture, normal_kl, product_of_experts

__version__ = "0.1.0"


def nonempty_subsets(num_modalities: int, device=None) -> Tensor:
    """Every non-empty subset of M modalities as a bool mask [2^M − 1, M]; row i is the binary
    expansion of i + 1 (so the singletons {m} are the rows 2^m − 1, the full set the last row)."""
    codes = torch.arange(1, 2**num_modalities, device=device)
    bits = 2 ** torch.arange(num_modalities, device=device)
    return (codes[:, None] & bits) > 0


def subset_posteriors(locs: Tensor, scales: Tensor, subsets: Tensor) -> tuple[Tensor, Tensor]:
    """q̃_S for every subset: the product of the prior expert and the experts in S.

    ``locs``/``scales`` [M, B, D], ``subsets`` [S, M] bool -> (loc, scale), each [S, B, D]."""
    return product_of_experts(locs[:, None], scales[:, None], subsets.T)


def assign_subsets(batch: int, num_subsets: int, device=None) -> Tensor:
    """Which subset each of ``batch`` items reconstructs from: [B] in [0, num_subsets).

    Systematic sampling: a uniform random offset, then the subsets in turn. Each item's subset
    is uniform (the estimate of the subsets' average is unbiased) and the subsets share the
    batch evenly (lower variance than drawing each item's subset independently)."""
    offset = torch.randint(num_subsets, (), device=device)
    return (torch.arange(batch, device=device) + offset) % num_subsets


class MoPoE(Posterior):
    """Mixture over all non-empty subsets of the product of their experts (Sutter et al. 2021)."""

    name = "mopoe"
    description = "MoPoE: mixture over all subsets of products of experts, generalized ELBO (Sutter et al. 2021)"
    family = DiagonalNormal()
    # not split into micro-batches (mmbench.step): assign_subsets stratifies the subsets over the
    # batch's positions, which chunks would change
    items_independent = False
    estimators = ("reparam",)

    def decoder_passes(self, num_modalities):
        # Each decoder once, on the K samples of every item (each item from its one subset).
        return num_modalities

    def condition(self, model, experts, observed):
        """The mixture over the non-empty subsets of the observed modalities (one product of
        experts when a single modality is observed)."""
        locs = torch.stack([experts[m].loc for m in observed])
        scales = torch.stack([experts[m].scale for m in observed])
        loc_s, scale_s = subset_posteriors(locs, scales, nonempty_subsets(len(observed), locs.device))
        components = [Factorised(self.family, loc, scale) for loc, scale in zip(loc_s, scale_s)]
        return components[0] if len(components) == 1 else Mixture(components)

    def objective(self, model, xs, K, estimator):
        """The generalized multimodal ELBO: closed-form KLs of every subset, the reconstruction of
        every modality from one systematically sampled subset per item. Returns the bound per item,
        averaged over the batch."""
        if estimator not in self.estimators:
            raise ValueError(f"{self.name} has no estimator '{estimator}'; use one of {self.estimators}")
        before = model.latents_decoded
        experts = model.encode(xs)
        locs = torch.stack([e.loc for e in experts])
        scales = torch.stack([e.scale for e in experts])
        subsets = nonempty_subsets(len(xs), locs.device)
        loc_s, scale_s = subset_posteriors(locs, scales, subsets)  # [S, B, D]
        prior_loc, prior_scale = model.prior_params()
        kl = normal_kl(loc_s, scale_s, prior_loc, prior_scale).mean(0)  # [B], exact over subsets

        batch = locs.shape[1]
        pick = assign_subsets(batch, len(subsets), locs.device)
        items = torch.arange(batch, device=locs.device)
        z = self.family.rsample(loc_s[pick, items], scale_s[pick, items], K)  # [K, B, D]
        recon = sum(w * model.log_likelihood(d, z, x) for d, (x, w) in enumerate(zip(xs, model.weights)))
        bound = recon.mean(0) - kl  # [B]
        passes = (model.latents_decoded - before) / (K * batch)
        return ObjectiveResult(loss=-bound.mean(), bound=bound.mean().detach(), decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(MoPoE())
