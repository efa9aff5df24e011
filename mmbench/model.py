"""The one generic multimodal VAE: an encoder and a decoder per modality, a prior of the
posterior's latent family, and the likelihood terms every objective is built from."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .api import Modality
from .distributions import Factorised, LatentFamily


class MultimodalVAE(nn.Module):
    """Encoders, decoders and prior over a dataset's modalities.

    ``latents_decoded`` counts the latent vectors passed through any decoder, so that an
    objective's decoder passes are measured (latents ÷ K·B), not assumed."""

    def __init__(self, modalities: list[Modality], latent_dim: int, family: LatentFamily):
        super().__init__()
        self.modalities = list(modalities)
        self.latent_dim = latent_dim
        self.family = family
        self.encoders = nn.ModuleList([m.encoder(latent_dim) for m in self.modalities])
        self.decoders = nn.ModuleList([m.decoder(latent_dim) for m in self.modalities])
        self.prior_params = family.make_prior(latent_dim)
        self.latents_decoded = 0

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def prior(self) -> Factorised:
        loc, scale = self.prior_params()
        return Factorised(self.family, loc, scale)

    def encode(self, xs: list[Tensor | None]) -> list[Factorised | None]:
        """One expert q_m(z|x_m) per modality (None where x_m is None)."""
        experts = []
        for enc, x in zip(self.encoders, xs):
            if x is None:
                experts.append(None)
                continue
            raw = enc(x)
            if raw.dtype in (torch.float16, torch.bfloat16):
                raw = raw.float()  # under autocast the networks run in half precision; densities stay fp32
            loc, scale = self.family.params(*raw.chunk(2, dim=-1))
            experts.append(Factorised(self.family, loc, scale))
        return experts

    def decode(self, d: int, z: Tensor) -> Tensor:
        """Decoder d on latents z [..., D]: one call on all of them, output [..., *params]."""
        flat = z.reshape(-1, z.shape[-1])
        self.latents_decoded += flat.shape[0]
        out = self.decoders[d](flat)
        return out.reshape(*z.shape[:-1], *out.shape[1:])

    def log_likelihood(self, d: int, z: Tensor, x: Tensor) -> Tensor:
        """log p_d(x | z) for latents z [..., B, D] and data x [B, ...] -> [..., B] (unweighted)."""
        return self.modalities[d].log_likelihood(self.decode(d, z), x)

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.modalities]
