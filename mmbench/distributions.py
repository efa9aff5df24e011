"""Latent families and the three pieces of density arithmetic written once: the log-mean-exp,
the mixture density and the product of Gaussian experts.

A *family* turns an encoder's raw output into distribution parameters and knows the
log-density and reparameterised sampler of that distribution. Densities are summed over the
last (latent) dimension, so every ``log_prob`` returns the batch shape of its input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS_SCALE = 1e-6


def log_mean_exp(x: Tensor, dim) -> Tensor:
    """log(mean(exp(x))) along ``dim`` (an int or tuple of ints), computed stably."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    count = math.prod(x.shape[d] for d in dims)
    return torch.logsumexp(x, dim=dims) - math.log(count)


def laplace_log_prob(x: Tensor, loc: Tensor, scale: Tensor | float) -> Tensor:
    """Elementwise log-density of Laplace(loc, scale) at x (no reduction)."""
    return -_log(2 * scale) - (x - loc).abs() / scale


def normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor | float) -> Tensor:
    """Elementwise log-density of Normal(loc, scale) at x (no reduction)."""
    return -0.5 * ((x - loc) / scale) ** 2 - _log(scale) - 0.5 * math.log(2 * math.pi)


def _log(value: Tensor | float):
    """log of a tensor, or of a fixed scale kept a Python number: a tensor made from a float
    on an accelerator would be a host-to-device copy (and a sync) in every training step."""
    return torch.log(value) if isinstance(value, Tensor) else math.log(value)


class LatentFamily:
    """A diagonal latent distribution family: parameters from raw outputs, sampling, density."""

    name: str

    def params(self, raw_loc: Tensor, raw_scale: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def rsample(self, loc: Tensor, scale: Tensor, n: int) -> Tensor:
        """n reparameterised samples, shape [n, *loc.shape]."""
        raise NotImplementedError

    def log_prob(self, z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """log q(z) summed over the latent dimension; loc/scale broadcast against z."""
        raise NotImplementedError

    def make_prior(self, latent_dim: int) -> nn.Module:
        """A module whose ``forward()`` returns the prior's (loc, scale), each [latent_dim]."""
        raise NotImplementedError


class SoftmaxLaplace(LatentFamily):
    """Laplace with scales softmax(ℓ)·D + 1e-6, so the D scales sum to D (MMVAE §4.1).

    The prior has location 0 and a learnt scale of the same softmax·D form."""

    name = "laplace-softmax"

    def params(self, raw_loc, raw_scale):
        return raw_loc, F.softmax(raw_scale, dim=-1) * raw_scale.shape[-1] + EPS_SCALE

    def rsample(self, loc, scale, n):
        # Inverse-CDF sampling: loc - scale·sign(u)·log(1 - 2|u|), u ~ U(-1/2, 1/2).
        u = torch.rand((n, *loc.shape), dtype=loc.dtype, device=loc.device) - 0.5
        u = u.clamp(-0.5 + 1e-7, 0.5 - 1e-7)
        return loc - scale * torch.sign(u) * torch.log1p(-2 * u.abs())

    def log_prob(self, z, loc, scale):
        return laplace_log_prob(z, loc, scale).sum(-1)

    def make_prior(self, latent_dim):
        return _LearntLaplacePrior(latent_dim)


class _LearntLaplacePrior(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.scale_logits = nn.Parameter(torch.zeros(latent_dim))

    def forward(self):
        return self.loc, F.softmax(self.scale_logits, dim=-1) * self.scale_logits.shape[-1]


class DiagonalNormal(LatentFamily):
    """Normal with σ = softplus(raw) + 1e-6 and a fixed standard-normal prior (MVAE)."""

    name = "normal"

    def params(self, raw_loc, raw_scale):
        return raw_loc, F.softplus(raw_scale) + EPS_SCALE

    def rsample(self, loc, scale, n):
        return loc + scale * torch.randn((n, *loc.shape), dtype=loc.dtype, device=loc.device)

    def log_prob(self, z, loc, scale):
        return normal_log_prob(z, loc, scale).sum(-1)

    def make_prior(self, latent_dim):
        return _StandardNormalPrior(latent_dim)


class _StandardNormalPrior(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self):
        return self.loc, self.scale


def normal_kl(loc: Tensor, scale: Tensor, prior_loc: Tensor, prior_scale: Tensor) -> Tensor:
    """KL(N(loc, scale) || N(prior_loc, prior_scale)), summed over the latent dimension."""
    ratio = (scale / prior_scale) ** 2
    return 0.5 * (ratio + ((loc - prior_loc) / prior_scale) ** 2 - 1 - torch.log(ratio)).sum(-1)


def product_of_experts(locs: Tensor, scales: Tensor, mask: Tensor | None = None,
                       prior_expert: bool = True) -> tuple[Tensor, Tensor]:
    """The product of a standard-normal prior expert and Gaussian experts (MVAE).

    ``locs``/``scales``: [E, ..., D] for E experts; ``mask``: [E] or broadcastable bool/float,
    1 where the expert takes part. Precision 1 + Σ σ⁻², mean (Σ μ σ⁻²) / precision. Without
    the ``prior_expert`` the precision is Σ σ⁻² alone (the experts' own product).
    """
    precision = scales.pow(-2)
    if mask is not None:
        mask = mask.to(precision.dtype).reshape(mask.shape + (1,) * (precision.dim() - mask.dim()))
        precision = precision * mask
    total = 1.0 + precision.sum(0) if prior_expert else precision.sum(0)
    loc = (locs * precision).sum(0) / total
    return loc, total.rsqrt()


class Factorised:
    """One diagonal distribution of a family: loc, scale [B, D]."""

    def __init__(self, family: LatentFamily, loc: Tensor, scale: Tensor):
        self.family, self.loc, self.scale = family, loc, scale

    @property
    def mean(self) -> Tensor:
        return self.loc

    def rsample(self, n: int) -> Tensor:
        return self.family.rsample(self.loc, self.scale, n)

    def log_prob(self, z: Tensor) -> Tensor:
        return self.family.log_prob(z, self.loc, self.scale)


class Mixture:
    """A uniform mixture of factorised components (the MoE joint posterior)."""

    def __init__(self, components: list[Factorised]):
        self.components = components

    @property
    def mean(self) -> Tensor:
        return torch.stack([c.mean for c in self.components]).mean(0)

    def rsample(self, n: int) -> Tensor:
        """n samples, each from a uniformly chosen component (independently per item)."""
        draws = torch.stack([c.rsample(n) for c in self.components])  # [C, n, B, D]
        pick = torch.randint(len(self.components), draws.shape[1:3], device=draws.device)
        return torch.gather(draws, 0, pick[None, ..., None].expand(1, *draws.shape[1:]))[0]

    def log_prob(self, z: Tensor) -> Tensor:
        return mixture_log_prob(torch.stack([c.log_prob(z) for c in self.components]))


class Concatenated:
    """Independent distributions over consecutive blocks of the latent (e.g. a shared block and
    one private block per modality): the sample is their concatenation along the last
    dimension, the log-density the sum of the blocks' log-densities."""

    def __init__(self, parts: list):
        self.parts = parts

    @property
    def sizes(self) -> list[int]:
        return [p.mean.shape[-1] for p in self.parts]

    @property
    def mean(self) -> Tensor:
        return _concatenate([p.mean for p in self.parts])

    def rsample(self, n: int) -> Tensor:
        return _concatenate([p.rsample(n) for p in self.parts])

    def log_prob(self, z: Tensor) -> Tensor:
        blocks = z.split(self.sizes, dim=-1)
        return sum(p.log_prob(b) for p, b in zip(self.parts, blocks))


def _concatenate(blocks: list[Tensor]) -> Tensor:
    """Blocks [..., D_i] joined along the last dimension, broadcasting the others (a prior's
    block [D_i] beside a posterior's [B, D_j])."""
    shape = torch.broadcast_shapes(*[b.shape[:-1] for b in blocks])
    return torch.cat([b.expand(*shape, b.shape[-1]) for b in blocks], dim=-1)


def mixture_log_prob(component_log_probs: Tensor) -> Tensor:
    """log of a uniform mixture: logsumexp over the first dimension minus log(#components)."""
    return log_mean_exp(component_log_probs, 0)
