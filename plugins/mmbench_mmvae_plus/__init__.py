"""MMVAE+ as an mmbench posterior: ``mmvae-plus``.

A shared latent u whose joint posterior is MMVAE's mixture of experts, q_Φ(u|X) = (1/M) Σ_j
q(u|x_j), and a private latent w_m per modality, q(w_m|x_m); decoder m reads (u, w_m); an
auxiliary prior r_n(w_n) per modality supplies the private latent of every *cross*
reconstruction (the model and its contract: :mod:`mmbench_mmvae_plus.model`).

The bound (MMVAE+ §3, the paper's D^β_{Φ,Θ} inside MMVAE's stratified IWAE, MMVAE Eq. 3). For
each modality m — the stratum — draw K samples (u_m^k, w_m^k) ~ q(u|x_m) q(w_m|x_m) and, for
every other modality n, w̃_{m,n}^k ~ r_n(w_n). With λ the likelihood weights:

    log w_m^k = λ_m log p(x_m | u_m^k, w_m^k) + Σ_{n≠m} λ_n log p(x_n | u_m^k, w̃_{m,n}^k)
                + β [log p(u_m^k) + log p(w_m^k) − log q_Φ(u_m^k | X) − log q(w_m^k | x_m)]

    L = (1/M) Σ_m [logsumexp_k log w_m^k − log K]

The w̃ are drawn, not weighed by a density: a cross term can only be explained by u, since w̃_n
knows nothing of x_n — what keeps the shared content out of the private latents. Equation
numbers of the MMVAE+ paper could not be read here; this form is the paper's objective as
its authors' code (``objectives.m_dreg``) and MultiVae's transcription compute it.

Gradients. ``dreg`` (the default): doubly-reparameterised, as MMVAE Appendix C, with the
encoders' factor (1 − β) w̃ + β w̃² that a β-weighted log q calls for
(:func:`mmbench.objectives.dreg_surrogate`); the hook sits on the drawn [u, w_m], the tensor
every term reads. ``iwae``: the plain IWAE gradient. The authors' code hooks w̃² on a
``torch.stack`` copy that nothing reads (so the hook never fires, as in the MMVAE code) and
leaves log q's parameters attached: what it trains with is the ``iwae`` gradient.

Cost: each decoder runs once on all M strata's K·B latents (its own sample in stratum d, an
auxiliary one elsewhere): M² decoder passes, as ``moe``.

Options (defaults: the paper's PolyMNIST run, commands/run_polyMNIST_experiment.sh of the
authors' code): the private size D_w = 32, β = 2.5, the auxiliary priors' scale and whether it
is learnt, and where cross generation draws the unobserved private latents from.

References: Palumbo, Daunhawer, Vogt. MMVAE+: Enhancing the Generative Quality of Multimodal
VAEs without Compromises. ICLR 2023. Shi et al., NeurIPS 2019 (MMVAE: Eq. 3, Appendix C).
Tucker et al., Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, ICLR 2019.
"""

from __future__ import annotations

import torch

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Option, Posterior
from mmbench.distributions import SoftmaxLaplace, mixture_log_prob
from mmbench.objectives import dreg_surrogate, stratified_iwae

from .model import SharedPrivateVAE


def log_weights(model: SharedPrivateVAE, xs, K: int, beta: float, detach_q: bool):
    """log w_m^k [M, K, B] of every stratum, and the drawn encoder samples s = [u, w_m]
    [M, K, B, D_u + D_w] from which every term is computed (DReG's hook goes there).

    ``detach_q``: log q with the encoders' parameters detached (DReG reaches them through s)."""
    family, Du, Dw = model.family, model.shared_dim, model.private_dim
    shared, private = model.experts(xs)
    M, B = len(xs), xs[0].shape[0]
    locs = torch.stack([torch.cat([u.loc, w.loc], -1) for u, w in zip(shared, private)])  # [M, B, Du+Dw]
    scales = torch.stack([torch.cat([u.scale, w.scale], -1) for u, w in zip(shared, private)])
    s = family.rsample(locs, scales, K).transpose(0, 1)  # [M, K, B, Du+Dw]
    u, w = s.split([Du, Dw], dim=-1)
    q_locs, q_scales = (locs.detach(), scales.detach()) if detach_q else (locs, scales)
    # log q_Φ(u|X): every expert j's density at every stratum's samples, [J, M, K, B], mixed over j
    log_q_u = mixture_log_prob(family.log_prob(u.unsqueeze(0), q_locs[:, None, None, :, :Du],
                                               q_scales[:, None, None, :, :Du]))
    log_q_w = family.log_prob(w, q_locs[:, None, :, Du:], q_scales[:, None, :, Du:])  # q(w_m|x_m): [M, K, B]
    log_prior = model.shared_prior().log_prob(u) + torch.stack([model.private_prior(m).log_prob(w[m]) for m in range(M)])
    loglik = 0.0
    for d, (x, weight) in enumerate(zip(xs, model.weights)):
        aux = model.aux_prior(d)
        drawn = family.rsample(aux.loc.expand(B, Dw), aux.scale.expand(B, Dw), (M - 1) * K).reshape(M - 1, K, B, Dw)
        private_d = torch.cat([drawn[:d], w[d:d + 1], drawn[d:]])  # stratum d keeps its own w_d
        loglik = loglik + weight * model.modalities[d].log_likelihood(model.decode_parts(d, u, private_d), x)
    return loglik + beta * (log_prior - log_q_u - log_q_w), s


class MMVAEPlus(Posterior):
    name = "mmvae-plus"
    description = ("MMVAE+: MoE shared latent, private latents with auxiliary priors for cross "
                   "reconstruction; stratified IWAE (MMVAE Eq. 3), DReG")
    family = SoftmaxLaplace()
    items_independent = True  # every term of the objective is per item (mmbench.step)
    estimators = ("dreg", "iwae")
    options = (
        Option("private_dim", 32, "size D_w of each modality's private latent (the shared one's is --latent-dim)", low=1),
        Option("beta", 2.5, "β on log p(u, w_m) − log q(u, w_m | X) in every log-weight", low=0.0),
        Option("aux_scale", 1.0, "mean scale s of the auxiliary priors r_m = Laplace(0, s·softmax(ℓ_m)·D_w)", low=1e-3),
        Option("learn_aux", True, "learn the auxiliary priors' scale logits ℓ_m (the authors' code does)"),
        Option("cross_from", "aux", "where cross generation draws unobserved private latents: the auxiliary "
               "prior r (aux) or the prior p (prior, as the authors' test code)", choices=("aux", "prior")),
    )

    def build_model(self, modalities, latent_dim):
        o = self.option_values
        return SharedPrivateVAE(modalities, latent_dim, o["private_dim"], self.family, aux_scale=o["aux_scale"],
                                learn_aux=o["learn_aux"], cross_from=o["cross_from"])

    def decoder_passes(self, num_modalities):
        return num_modalities**2

    def objective(self, model, xs, K, estimator):
        if estimator not in self.estimators:
            raise ValueError(f"{self.name} has no estimator '{estimator}'; use one of {self.estimators}")
        beta = self.option_values["beta"]
        before = model.latents_decoded
        log_w, s = log_weights(model, xs, K, beta, detach_q=estimator == "dreg")
        passes = (model.latents_decoded - before) / (K * xs[0].shape[0])
        bound = stratified_iwae(log_w)
        if estimator == "dreg":
            loss = -dreg_surrogate(log_w, s, (1,), beta=beta).mean(0).mean()  # mean(0): Eq. 3's 1/M
        else:
            loss = -bound.mean()
        return ObjectiveResult(loss=loss, bound=bound.mean().detach(), decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(MMVAEPlus())
