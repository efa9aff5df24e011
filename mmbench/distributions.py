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


def clamped_laplace_log_prob(x: Tensor, mean: Tensor, scale: float, low: float, high: float,
                             event_dims: int) -> Tensor:
    """Σ over the last ``event_dims`` dims of log Laplace(x; clamp(mean, low, high), scale): the
    image likelihood, over decoder means [..., B, *event] and data [B, *event].

    Its value and gradient equal, bit for bit, those of
    ``laplace_log_prob(x, mean.clamp(low, high), scale).sum(event dims)`` — which is what runs
    under torch.compile (the compiler fuses it) or when x needs a gradient. Eagerly, the same
    arithmetic runs in one temporary instead of five, and the backward pass keeps nothing of
    mean's size but mean: on M·K·B decoded images these temporaries are most of a step's
    element-wise memory traffic."""
    x = _same_layout(x, mean)
    if _is_compiling() or x.requires_grad or isinstance(scale, Tensor):
        return laplace_log_prob(x, mean.clamp(low, high), scale).sum(tuple(range(-event_dims, 0)))
    return _ClampedLaplace.apply(x, mean, scale, low, high, event_dims)


class _ClampedLaplace(torch.autograd.Function):
    """clamped_laplace_log_prob, each step the same floating-point operation as the plain
    composition (tests/test_acceleration.py checks torch.equal on values and gradients)."""

    @staticmethod
    def forward(ctx, x, mean, scale, low, high, event_dims):
        ctx.save_for_backward(x, mean)
        ctx.scale, ctx.low, ctx.high = scale, low, high
        t = mean.clamp(low, high).to(torch.result_type(x, mean))  # as x − loc would promote (bf16 means)
        torch.sub(x, t, out=t).abs_().div_(scale)  # |x − loc| / b
        t.neg_().add_(-math.log(2 * scale))  # −log 2b − |x − loc| / b, rounded as c − t is
        return t.sum(tuple(range(-event_dims, 0)))

    @staticmethod
    def backward(ctx, grad):
        x, mean = ctx.saved_tensors
        inside = (mean > ctx.low).logical_and_(mean < ctx.high)  # where clamp passes a gradient (not at its bounds)
        loc = mean.clamp(ctx.low, ctx.high).to(torch.result_type(x, mean))
        per_item = (grad / ctx.scale).reshape(*grad.shape, *(1,) * (mean.dim() - grad.dim()))
        slope = torch.sub(x, loc, out=loc).sign_().mul_(per_item)
        return None, torch.where(inside, slope, 0).to(mean.dtype), None, None, None, None


def _same_layout(x: Tensor, like: Tensor) -> Tensor:
    """Images x [B, C, H, W] in channels-last when ``like`` (decoder means [..., C, H, W]) is:
    element-wise kernels over operands of different layouts cannot vectorise."""
    if x.dim() == 4 and like.dim() >= 4 and like.shape[-3] > 1 and like.stride(-3) == 1 and x.stride(-3) != 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _is_compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check and check())


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
                       prior_power: float = 1.0) -> tuple[Tensor, Tensor]:
    """The normalised product of a standard-normal prior expert and Gaussian experts (MVAE),
    each raised to a power: N(0, I)^{π_0} Π_e q_e^{π_e}, itself a Gaussian.

    ``locs``/``scales``: [E, ..., D] for E experts; ``mask``: [E] or broadcastable, the powers
    π_e — bool or 1/0 where an expert takes part or not, fractions for a weighted geometric mean
    (mmJSD's dynamic prior); ``prior_power``: π_0, 1 for MVAE's prior expert, 0 for the product
    of the experts alone. Precision π_0 + Σ π_e σ_e⁻², mean (Σ π_e μ_e σ_e⁻²) / precision.
    """
    precision = scales.pow(-2)
    if mask is not None:
        mask = mask.to(precision.dtype).reshape(mask.shape + (1,) * (precision.dim() - mask.dim()))
        precision = precision * mask
    total = prior_power + precision.sum(0)
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
    dimension, the log-density the sum of the blocks' log-densities. The blocks share their
    batch shape (expand a prior's block to the batch: ``Factorised(f, loc.expand(B, -1), ...)``)."""

    def __init__(self, parts: list):
        self.parts = parts

    @property
    def sizes(self) -> list[int]:
        return [p.mean.shape[-1] for p in self.parts]

    @property
    def mean(self) -> Tensor:
        return torch.cat([p.mean for p in self.parts], dim=-1)

    def rsample(self, n: int) -> Tensor:
        return torch.cat([p.rsample(n) for p in self.parts], dim=-1)

    def log_prob(self, z: Tensor) -> Tensor:
        blocks = z.split(self.sizes, dim=-1)
        return sum(p.log_prob(b) for p, b in zip(self.parts, blocks))


def mixture_log_prob(component_log_probs: Tensor) -> Tensor:
    """log of a uniform mixture: logsumexp over the first dimension minus log(#components)."""
    return log_mean_exp(component_log_probs, 0)
