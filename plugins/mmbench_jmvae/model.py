"""The JMVAE model: the generic multimodal VAE (one encoder and one decoder per modality, one
shared Gaussian latent, N(0, I) prior) plus a *joint* encoder q(z | x_1, …, x_M).

The joint encoder (our choice; the paper's networks are per-dataset MLPs over the concatenated
inputs): for each modality a feature network of the modality's own encoder architecture
(``Modality.encoder(FEATURES // 2)``, its raw output of FEATURES numbers taken as features,
with parameters of its own — not the unimodal encoders'), a ReLU, the M feature vectors
concatenated, and an MLP FEATURES·M → HIDDEN → 2·D to the posterior's parameters. Built from the
modalities' encoders, it suits any dataset's modalities (images, captions) without knowing them.

Which posterior ``condition`` gives (the model contract, docs/plugins.md):

- all modalities observed: the joint encoder q(z | X) (JMVAE §3.1: the encoder it trains);
- one modality m: its unimodal encoder q(z | x_m) (JMVAE-kl §3.2: what they are trained for);
- another subset S (three or more modalities, which the paper never has): the product of the
  observed unimodal experts Π_{m∈S} q(z | x_m), normalised (without a prior expert, as
  MultiVae's JMVAE does). No term of the objective trains it: it is a proposal and a
  representation with a density, never claimed to be the joint encoder's answer.

References: Suzuki, Nakayama, Matsuo. Joint Multimodal Learning with Deep Generative Models.
arXiv:1611.01891, 2016.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.distributions import Factorised, product_of_experts
from mmbench.model import MultimodalVAE, encode_experts

FEATURES = 64  # per modality, out of its feature network
HIDDEN = 256


class JointEncoder(nn.Module):
    """x_1..x_M -> raw posterior parameters [B, 2·D]: per-modality features, concatenated, an MLP."""

    def __init__(self, modalities, latent_dim: int):
        super().__init__()
        self.features = nn.ModuleList([m.encoder(FEATURES // 2) for m in modalities])
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURES * len(modalities), HIDDEN), nn.ReLU(),
                                  nn.Linear(HIDDEN, 2 * latent_dim))

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.head(torch.cat([net(x) for net, x in zip(self.features, xs)], dim=-1))


class JointEncoderVAE(MultimodalVAE):
    """MultimodalVAE with a joint encoder; ``condition`` chooses the encoder by what is observed."""

    def __init__(self, modalities, latent_dim: int, family):
        super().__init__(modalities, latent_dim, family)
        self.joint_encoder = JointEncoder(self.modalities, latent_dim)

    def joint(self, xs: list[Tensor]) -> Factorised:
        """q(z | x_1, …, x_M) [B, D]."""
        (q,) = encode_experts([self.joint_encoder], self.family, [xs])
        return q

    def condition(self, xs: list[Tensor | None], observed: list[int]) -> Factorised:
        """*Contract.* The joint encoder given all modalities, the unimodal one given one, the
        product of the observed unimodal experts given another subset."""
        observed = sorted(set(observed))
        if len(observed) == len(self.modalities):
            return self.joint(xs)
        experts = self.encode([x if m in observed else None for m, x in enumerate(xs)])
        if len(observed) == 1:
            return experts[observed[0]]
        locs = torch.stack([experts[m].loc for m in observed])
        scales = torch.stack([experts[m].scale for m in observed])
        return Factorised(self.family, *product_of_experts(locs, scales, prior_power=0.0))
