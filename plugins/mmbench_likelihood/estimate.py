"""Importance-sampled log marginal likelihoods of a trained multimodal VAE (MMVAE §4, Table 3).

One estimator serves every entry of Table 3: draw S samples from a proposal q — the joint
posterior given some observed set of modalities — and for each *target* set T of modalities

    log p(x_T) ≈ log (1/S) Σ_s p(z_s) Π_{d∈T} p_d(x_d | z_s) / q(z_s),     z_s ~ q,

unweighted (λ = 1), in nats. A mixture-of-experts proposal is sampled stratified, S/C samples
from each of its C experts, and the weights are combined by Eq. 5's single importance sum over
all of them (``mmbench.objectives.tight_iwae``) with the mixture density as the denominator;
a single-component proposal reduces to the plain IWAE estimate. Every target set shares the
proposal's samples, so ``loglik[m,n]``, ``loglik[m|m,n]`` and ``loglik[n|m,n]`` cost one set of
draws. Latents are drawn and decoded in chunks so memory stays bounded whatever S is.

References: Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
Shi, Siddharth, Paige, Torr. Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep
Generative Models. NeurIPS 2019 (Eq. 5, Table 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench.errors import Unsupported
from mmbench.objectives import tight_iwae

#: most latents drawn and decoded at once (bounds memory: a 3×32×32 decoder output is 12 kB each)
LATENT_BUDGET = 8192


def proposal_components(q) -> list:
    """The experts a proposal is sampled from, stratified: a mixture's components, else q itself."""
    return list(getattr(q, "components", None) or [q])


def samples_per_component(q, samples: int) -> int:
    return max(1, samples // len(proposal_components(q)))


@torch.no_grad()
def log_marginals(model, q, xs: list[Tensor | None], target_sets: list[tuple[int, ...]], samples: int,
                  budget: int = LATENT_BUDGET) -> dict[tuple[int, ...], Tensor]:
    """IWAE estimates of log p(x_T) [B] for every target set T, all from one set of samples of
    the proposal q (a posterior over B items). ``xs[d]`` must be given for every d in a target."""
    if not hasattr(q, "log_prob"):
        raise Unsupported(f"the model's posterior ({type(q).__name__}) has no density to weight samples with")
    components = proposal_components(q)
    per = samples_per_component(q, samples)
    batch = components[0].mean.shape[0]
    chunk = max(1, budget // (len(components) * batch))
    prior = model.prior()
    decoders = sorted({d for target in target_sets for d in target})
    base, loglik = [], {d: [] for d in decoders}
    for start in range(0, per, chunk):
        z = torch.stack([c.rsample(min(chunk, per - start)) for c in components])  # [C, n, B, D]
        base.append(prior.log_prob(z) - q.log_prob(z))
        for d in decoders:
            loglik[d].append(model.log_likelihood(d, z, xs[d]))
    base = torch.cat(base, 1)  # [C, S/C, B]
    loglik = {d: torch.cat(parts, 1) for d, parts in loglik.items()}
    return {target: tight_iwae(base + sum(loglik[d] for d in target)) for target in target_sets}


def items_per_batch(samples: int, budget: int = LATENT_BUDGET) -> int:
    """Items estimated together so that one chunk of their samples fits the budget."""
    return max(1, budget // samples)
