"""JMVAE-kl as an mmbench posterior: ``jmvae``.

A joint encoder q(z | X) over all modalities (:mod:`mmbench_jmvae.model`) trains with the
ELBO of the joint, and unimodal encoders q(z | x_m) — used when modalities are missing — are
pulled towards it by KL terms (JMVAE §3.1 for L_JM, §3.2 for JMVAE-kl). With λ the likelihood
weights, Gaussian posteriors and a N(0, I) prior:

    L_JM(X)   = E_{q(z|X)}[Σ_m λ_m log p(x_m | z)] − KL(q(z|X) ‖ p(z))
    L_JMkl(X) = L_JM(X) − α Σ_m KL(q(z|X) ‖ q(z|x_m))

The paper writes it for two modalities, −α[KL(q(z|x,w) ‖ q(z|x)) + KL(q(z|x,w) ‖ q(z|w))];
the sum over m is its M-modality form. Every KL is Gaussian in closed form
(:func:`mmbench.distributions.normal_kl`); the expectation takes K samples of q(z|X). The KL
terms train both sides: the unimodal encoders towards the joint one and the joint one towards
them. The logged bound is L_JM, the ELBO under the joint encoder (a bound on log p(X)); the
loss is −L_JMkl. Equation numbers could not be read from the sources available here; the
sections are those of arXiv:1611.01891.

α = 0.1 by default, the setting of the paper's MNIST experiments (and of MultiVae's
reproduction of them); α = 0 is the paper's "JMVAE-zero". The paper's warm-up of the KL
terms over the first epochs is not part of this objective (it has no epoch).

Cost: each decoder runs once on the joint posterior's K·B samples: M decoder passes.

References: Suzuki, Nakayama, Matsuo. Joint Multimodal Learning with Deep Generative Models.
arXiv:1611.01891, 2016.
"""

from __future__ import annotations

from mmbench import hookimpl
from mmbench.api import ObjectiveResult, Option, Posterior
from mmbench.distributions import DiagonalNormal, normal_kl

from .model import JointEncoderVAE


class JMVAE(Posterior):
    name = "jmvae"
    description = "JMVAE-kl: a joint encoder's ELBO, unimodal encoders pulled to it by α·KL (Suzuki et al. 2016)"
    family = DiagonalNormal()
    items_independent = True  # every term of the objective is per item (mmbench.step)
    estimators = ("reparam",)
    options = (Option("alpha", 0.1, "α, the weight of Σ_m KL(q(z|X) ‖ q(z|x_m)); 0 is JMVAE-zero", low=0.0),)

    def build_model(self, modalities, latent_dim):
        return JointEncoderVAE(modalities, latent_dim, self.family)

    def decoder_passes(self, num_modalities):
        return num_modalities

    def objective(self, model, xs, K, estimator):
        before = model.latents_decoded
        joint = model.joint(xs)
        z = model.family.rsample(joint.loc, joint.scale, K)  # [K, B, D]
        recon = sum(w * model.log_likelihood(d, z, x) for d, (x, w) in enumerate(zip(xs, model.weights))).mean(0)
        passes = (model.latents_decoded - before) / (K * xs[0].shape[0])
        prior_loc, prior_scale = model.prior_params()
        elbo = recon - normal_kl(joint.loc, joint.scale, prior_loc, prior_scale)  # L_JM [B]
        pull = sum(normal_kl(joint.loc, joint.scale, e.loc, e.scale) for e in model.encode(xs))  # Σ_m KL(q(z|X) ‖ q_m)
        value = elbo - self.option_values["alpha"] * pull
        return ObjectiveResult(loss=-value.mean(), bound=elbo.mean().detach(), decoder_passes=passes)


@hookimpl
def register_posteriors(register):
    register(JMVAE())
