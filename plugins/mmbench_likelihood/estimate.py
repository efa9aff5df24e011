"""Importance-sampled log marginal likelihoods of a trained multimodal VAE (MMVAE §4, Table 3).

One estimator serves every entry of Table 3: draw S samples from a proposal q — the joint
posterior given some observed set of modalities — and for each *target* set T of modalities

    log p(x_T) ≈ log (1/S) Σ_s p(z_s) Π_{d∈T} p_d(x_d | z_s) / q(z_s),     z_s ~ q,

unweighted (λ = 1), in nats. A mixture-of-experts proposal is sampled stratified, S/C samples
from each of its C experts, and the weights are combined by Eq. 5's single importance sum over
all of them (``mmbench.objectives.tight_iwae``) with the mixture density as the denominator;
a single-component proposal reduces to the plain IWAE estimate. Every target set shares the
proposal's samples, so ``loglik[m,n]``, ``loglik[m|m,n]`` and ``loglik[n|m,n]`` cost one set of
draws, and a later proposal whose components were drawn before for the same items (a mixture's
experts, drawn as single-modality proposals) reuses them (:class:`SampleBank`). Latents are
drawn and decoded in chunks so memory stays bounded whatever S is.

References: Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
Shi, Siddharth, Paige, Torr. Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep
Generative Models. NeurIPS 2019 (Eq. 5, Table 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench.distributions import Factorised
from mmbench.errors import Unsupported
from mmbench.objectives import tight_iwae

#: most latents drawn and decoded at once (bounds memory: a 3×32×32 decoder output is 12 kB each)
LATENT_BUDGET = 8192


def proposal_components(q) -> list:
    """The experts a proposal is sampled from, stratified: a mixture's components, else q itself."""
    return list(getattr(q, "components", None) or [q])


def samples_per_component(q, samples: int) -> int:
    return max(1, samples // len(proposal_components(q)))


def same_distribution(a, b) -> bool:
    """Whether two proposal components are one distribution: the same family, loc and scale."""
    return (isinstance(a, Factorised) and isinstance(b, Factorised) and a.family is b.family
            and a.loc.shape == b.loc.shape and torch.equal(a.loc, b.loc) and torch.equal(a.scale, b.scale))


class SampleBank:
    """Samples of proposal components already drawn for a batch of items, with the decoders'
    log-likelihoods at them, for later proposals to reuse.

    A mixture-of-experts proposal given x_m and x_n holds the very experts q(z|x_m) and q(z|x_n)
    that the single-modality proposals were; its stratified estimate then takes the first S/2
    samples of each of those, already decoded, instead of drawing and decoding S anew. The
    estimator is the same (the samples are still independent draws of each component); its
    estimates of loglik[m|m] and loglik[m|m,n] now share samples, so their difference — synergy —
    is less noisy. A component that matches nothing drawn before (a product of experts) is drawn."""

    def __init__(self):
        self.entries: list[tuple] = []

    def find(self, component, n: int, decoders, taken: set) -> tuple[Tensor, dict[int, Tensor]] | None:
        """The first n samples of a drawn component equal to ``component`` (not one of the
        entries in ``taken``: one proposal's strata stay independent), or None."""
        for i, (drawn, z, loglik) in enumerate(self.entries):
            if (i not in taken and len(z) >= n and set(decoders) <= set(loglik)
                    and same_distribution(drawn, component)):
                taken.add(i)
                return z[:n], {d: loglik[d][:n] for d in decoders}
        return None

    def add(self, component, z: Tensor, loglik: dict[int, Tensor]) -> None:
        self.entries.append((component, z, loglik))


def _draw(model, component, xs, decoders, n: int, chunk: int) -> tuple[Tensor, dict[int, Tensor]]:
    """n samples [n, B, D] of one component, and log p_d(x_d | z) [n, B] for each decoder d,
    drawn and decoded ``chunk`` samples at a time."""
    zs, loglik = [], {d: [] for d in decoders}
    for start in range(0, n, chunk):
        z = component.rsample(min(chunk, n - start))
        zs.append(z)
        for d in decoders:
            loglik[d].append(model.log_likelihood(d, z, xs[d]))
    return torch.cat(zs), {d: torch.cat(parts) for d, parts in loglik.items()}


@torch.no_grad()
def log_marginals(model, q, xs: list[Tensor | None], target_sets: list[tuple[int, ...]], samples: int,
                  budget: int = LATENT_BUDGET, bank: SampleBank | None = None) -> dict[tuple[int, ...], Tensor]:
    """IWAE estimates of log p(x_T) [B] for every target set T, all from one set of samples of
    the proposal q (a posterior over B items). ``xs[d]`` must be given for every d in a target.

    With a ``bank``, a component of q drawn before (for another proposal of these items, and
    decoded there by every decoder the targets here need) is reused, and what is drawn here is
    kept there."""
    if not hasattr(q, "log_prob"):
        raise Unsupported(f"the model's posterior ({type(q).__name__}) has no density to weight samples with")
    components = proposal_components(q)
    per = samples_per_component(q, samples)
    batch = components[0].mean.shape[0]
    chunk = max(1, budget // batch)
    decoders = sorted({d for target in target_sets for d in target})
    zs, logliks, taken = [], [], set()
    for component in components:
        found = bank.find(component, per, decoders, taken) if bank is not None else None
        if found is None:
            found = _draw(model, component, xs, decoders, per, chunk)
            if bank is not None:
                taken.add(len(bank.entries))
                bank.add(component, *found)
        zs.append(found[0])
        logliks.append(found[1])
    z = torch.stack(zs)  # [C, S/C, B, D]
    base = model.prior().log_prob(z) - q.log_prob(z)
    loglik = {d: torch.stack([ll[d] for ll in logliks]) for d in decoders}
    return {target: tight_iwae(base + sum(loglik[d] for d in target)) for target in target_sets}


def items_per_batch(samples: int, budget: int = LATENT_BUDGET) -> int:
    """Items estimated together so that one chunk of their samples fits the budget."""
    return max(1, budget // samples)
