"""Mixture-of-experts joint posteriors (MMVAE): ``moe`` (Eq. 3), ``moe-tight`` (Eq. 5) and
``is-elbo`` (Appendix B).

References: Shi, Siddharth, Paige, Torr. Variational Mixture-of-Experts Autoencoders for
Multi-Modal Deep Generative Models. NeurIPS 2019.
"""

from __future__ import annotations

import torch

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Posterior
from mmbench.distributions import Mixture, SoftmaxLaplace, mixture_log_prob
from mmbench.objectives import dreg_surrogate, importance_sampled_elbo, stratified_iwae, tight_iwae


def _expert_samples(model, xs, K):
    """Encode every modality and draw K samples from each expert.

    Returns (locs, scales) [M, B, D] and z [M, K, B, D], the one tensor every later term uses."""
    experts = model.encode(xs)
    locs = torch.stack([e.loc for e in experts])
    scales = torch.stack([e.scale for e in experts])
    # Contiguous once here, rather than copied by every decoder's reshape (M copies) and
    # strided through by every density over the stack.
    z = model.family.rsample(locs, scales, K).transpose(0, 1).contiguous()  # [M, K, B, D]
    return locs, scales, z


def _cross_log_q(family, z, locs, scales):
    """log q_i(z_j^k | x_i) for every expert i and sample z_j^k: [I, J, K, B]."""
    return family.log_prob(z.unsqueeze(0), locs[:, None, None], scales[:, None, None])


def _log_weights(model, xs, K, detach_q: bool):
    """log w_m^k = log p(z_m^k) + Σ_d λ_d log p_d(x_d | z_m^k) − log q_Φ(z_m^k | x): [M, K, B].

    Each decoder runs once on all M·K·B latents (M² passes of K·B in the arithmetic)."""
    locs, scales, z = _expert_samples(model, xs, K)
    q_locs, q_scales = (locs.detach(), scales.detach()) if detach_q else (locs, scales)
    log_q = mixture_log_prob(_cross_log_q(model.family, z, q_locs, q_scales))
    prior = model.prior()
    log_p = prior.log_prob(z)
    for d, (x, weight) in enumerate(zip(xs, model.weights)):
        log_p = log_p + weight * model.log_likelihood(d, z, x)
    return log_p - log_q, z


class _MixturePosterior(Posterior):
    family = SoftmaxLaplace()
    items_independent = True  # importance weights normalise within an item (mmbench.step)

    def condition(self, model, experts, observed):
        return Mixture([experts[m] for m in observed])


class _StratifiedBound(_MixturePosterior):
    """An IWAE-type MoE bound over the M·K stratified samples, with DReG or plain IWAE gradients."""

    estimators = ("dreg", "iwae")
    bound_fn = staticmethod(stratified_iwae)
    weight_dims: tuple[int, ...] = (1,)

    def decoder_passes(self, num_modalities):
        return num_modalities**2

    def objective(self, model, xs, K, estimator):
        if estimator not in self.estimators:
            raise ValueError(f"{self.name} has no estimator '{estimator}'; use one of {self.estimators}")
        before = model.latents_decoded
        log_w, z = _log_weights(model, xs, K, detach_q=(estimator == "dreg"))
        passes = (model.latents_decoded - before) / (K * xs[0].shape[0])
        bound = self.bound_fn(log_w)
        if estimator == "dreg":
            surrogate = dreg_surrogate(log_w, z, self.weight_dims)
            if self.weight_dims == (1,):
                surrogate = surrogate.mean(0)  # the 1/M of Eq. 3
            loss = -surrogate.mean()
        else:
            loss = -bound.mean()
        return ObjectiveResult(loss=loss, bound=bound.mean().detach(), decoder_passes=passes)


class MoE(_StratifiedBound):
    name = "moe"
    by_default = True
    description = "MMVAE mixture of experts, stratified IWAE bound (Eq. 3)"


class MoETight(_StratifiedBound):
    name = "moe-tight"
    description = "MMVAE mixture of experts, tighter single importance sum (Eq. 5)"
    bound_fn = staticmethod(tight_iwae)
    weight_dims = (0, 1)


class ISELBO(_MixturePosterior):
    name = "is-elbo"
    description = "MMVAE importance-sampled ELBO, linear in M (Appendix B)"
    # reparam: Appendix B as written. baseline: the same with a leave-one-out control variate on
    # the cross terms (unbiased; see mmbench.objectives.importance_sampled_elbo).
    estimators = ("reparam", "baseline")

    def decoder_passes(self, num_modalities):
        return num_modalities

    def objective(self, model, xs, K, estimator):
        before = model.latents_decoded
        locs, scales, z = _expert_samples(model, xs, K)
        log_q_cross = _cross_log_q(model.family, z, locs, scales)  # [I, J, K, B]
        weighted = torch.stack(
            [w * model.log_likelihood(j, z[j], x) for j, (x, w) in enumerate(zip(xs, model.weights))]
        )  # decoder j on its own expert's samples only: M passes
        passes = (model.latents_decoded - before) / (K * xs[0].shape[0])
        value = importance_sampled_elbo(model.prior().log_prob(z), weighted, mixture_log_prob(log_q_cross), log_q_cross,
                                        baseline=estimator == "baseline")
        return ObjectiveResult(loss=-value.mean(), bound=value.mean().detach(), decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(MoE())
    register(MoETight())
    register(ISELBO())
