"""The MMVAE+ model: a shared latent u, a private latent w_m per modality, the auxiliary priors
r_m(w_m), and the model contract (mmbench.model) over the whole latent z = [u, w_1, …, w_M].

Networks, as the authors' code builds them: per modality a shared encoder q(u|x_m), a private
encoder q(w_m|x_m) (a network of its own, as the code's separate ``w`` branch is) and a decoder
p(x_m | u, w_m) reading the concatenation [u, w_m]. The prior p(u, w_1, …, w_M) is fixed,
Laplace(0, 1) in every dimension (the code's prior parameters do not train: softmax(0)·D = 1).
The auxiliary prior r_m(w_m) is Laplace(0, s·softmax(ℓ_m)·D_w) with ℓ_m learnt from zero (the
code: "it is important that this log-variance vector is learnable") and s = ``aux_scale``.

What metrics see (docs/plugins.md, "The model contract"):

- ``prior()``: p over the whole latent (joint generation draws u and every w_m from it);
- ``condition(xs, S)``: u from the uniform mixture of the observed experts q(u|x_m), m ∈ S;
  w_m from q(w_m|x_m) for m ∈ S; w_n from the prior p(w_n) for n ∉ S — so densities and
  importance weights are those of the generative model;
- ``cross_latents(xs, S)``: as ``condition`` but the unobserved w_n drawn from the auxiliary
  prior r_n (MMVAE+ §3: cross generation uses r, the distribution the cross terms were trained
  with); ``cross_from="prior"`` draws them from p(w_n) as the authors' test code does;
- ``represent(xs, S)``: the mean of the shared block (what the paper's latent probes read);
- ``decode(d, z)``: decoder d on [u, w_d] cut from the whole latent, counted.

References: Palumbo, Daunhawer, Vogt. MMVAE+: Enhancing the Generative Quality of Multimodal
VAEs without Compromises. ICLR 2023.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbench.distributions import EPS_SCALE, Concatenated, Factorised, LatentFamily, Mixture
from mmbench.model import encode_experts


class SharedPrivateVAE(nn.Module):
    """Shared and private encoders, decoders on [u, w_m], a fixed prior and learnt auxiliary
    priors; the whole latent is one tensor [..., D_u + M·D_w]."""

    def __init__(self, modalities, shared_dim: int, private_dim: int, family: LatentFamily, *,
                 aux_scale: float = 1.0, learn_aux: bool = True, cross_from: str = "aux"):
        super().__init__()
        self.modalities = list(modalities)
        self.names = [m.name for m in self.modalities]
        self.weights = [m.weight for m in self.modalities]  # λ_m, the likelihood weights
        self.shared_dim, self.private_dim, self.family = shared_dim, private_dim, family
        self.aux_scale, self.cross_from = aux_scale, cross_from
        self.encoders = nn.ModuleList([m.encoder(shared_dim) for m in self.modalities])
        self.private_encoders = nn.ModuleList([m.encoder(private_dim) for m in self.modalities])
        self.decoders = nn.ModuleList([m.decoder(shared_dim + private_dim) for m in self.modalities])
        self.aux_logits = nn.Parameter(torch.zeros(len(self.modalities), private_dim), requires_grad=learn_aux)
        total = shared_dim + len(self.modalities) * private_dim
        self.register_buffer("prior_loc", torch.zeros(total))
        self.register_buffer("prior_scale", torch.ones(total))
        self.latents_decoded = 0

    # ------------------------------------------------------------------ the latent's blocks
    def private_block(self, m: int) -> slice:
        start = self.shared_dim + m * self.private_dim
        return slice(start, start + self.private_dim)

    def shared_prior(self) -> Factorised:
        """p(u): [D_u]."""
        return Factorised(self.family, self.prior_loc[:self.shared_dim], self.prior_scale[:self.shared_dim])

    def private_prior(self, m: int) -> Factorised:
        """p(w_m): [D_w]."""
        block = self.private_block(m)
        return Factorised(self.family, self.prior_loc[block], self.prior_scale[block])

    def aux_prior(self, m: int) -> Factorised:
        """r_m(w_m): [D_w], location 0, scales summing to aux_scale·D_w."""
        logits = self.aux_logits[m]
        scale = self.aux_scale * F.softmax(logits, dim=-1) * logits.shape[-1] + EPS_SCALE
        return Factorised(self.family, torch.zeros_like(scale), scale)

    @staticmethod
    def batched(q: Factorised, batch: int) -> Factorised:
        """A distribution over [D] as the same one for each of ``batch`` items, [batch, D]."""
        return Factorised(q.family, q.loc.expand(batch, -1), q.scale.expand(batch, -1))

    # ------------------------------------------------------------------ the contract
    def prior(self) -> Factorised:
        """*Contract.* p(u) Π_m p(w_m) over the whole latent [D_u + M·D_w]."""
        return Factorised(self.family, self.prior_loc, self.prior_scale)

    def condition(self, xs: list[Tensor | None], observed: list[int]) -> Concatenated:
        """*Contract.* q(u | x_S) (the mixture of the observed experts) × Π_{m∈S} q(w_m|x_m)
        × Π_{n∉S} p(w_n)."""
        return self._posterior(xs, observed, unobserved=self.private_prior)

    def cross_latents(self, xs: list[Tensor | None], observed: list[int]) -> Tensor:
        """*Contract.* One draw [B, D]: u ~ q(u | x_S), observed w_m ~ q(w_m|x_m), unobserved
        w_n ~ r_n (or p(w_n) with cross_from="prior")."""
        unobserved = self.aux_prior if self.cross_from == "aux" else self.private_prior
        return self._posterior(xs, observed, unobserved=unobserved).rsample(1)[0]

    def represent(self, xs: list[Tensor | None], observed: list[int]) -> Tensor:
        """*Contract.* The shared block's posterior mean [B, D_u]."""
        shared = encode_experts(self.encoders, self.family, xs)
        return Mixture([shared[m] for m in observed]).mean

    def decode(self, d: int, z: Tensor) -> Tensor:
        """*Contract.* Decoder d on the blocks it reads, [u, w_d], of whole latents z [..., D]."""
        return self.decode_parts(d, z[..., :self.shared_dim], z[..., self.private_block(d)])

    def log_likelihood(self, d: int, z: Tensor, x: Tensor) -> Tensor:
        """*Contract.* log p_d(x | u, w_d) for whole latents z [..., B, D] -> [..., B]."""
        return self.modalities[d].log_likelihood(self.decode(d, z), x)

    # ------------------------------------------------------------------ for the objective
    def experts(self, xs: list[Tensor | None]) -> tuple[list, list]:
        """(q(u|x_m), q(w_m|x_m)) per modality, None where x_m is None."""
        return encode_experts(self.encoders, self.family, xs), encode_experts(self.private_encoders, self.family, xs)

    def decode_parts(self, d: int, u: Tensor, w: Tensor) -> Tensor:
        """Decoder d on [u, w] (u [..., D_u], w [..., D_w]): one call, counted, [..., *params]."""
        flat = torch.cat([u, w], dim=-1).reshape(-1, self.shared_dim + self.private_dim)
        self.latents_decoded += flat.shape[0]
        out = self.decoders[d](flat)
        return out.reshape(*u.shape[:-1], *out.shape[1:])

    def _posterior(self, xs, observed, unobserved) -> Concatenated:
        observed = list(observed)
        shared, private = self.experts(xs)
        batch = next(x for x in xs if x is not None).shape[0]
        blocks = [private[m] if m in observed else self.batched(unobserved(m), batch)
                  for m in range(len(self.modalities))]
        return Concatenated([Mixture([shared[m] for m in observed]), *blocks])
