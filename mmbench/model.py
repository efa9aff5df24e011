"""The model contract every metric reads, and the one generic multimodal VAE that implements it.

A posterior plugin builds its model with ``Posterior.build_model``; the default is
:class:`MultimodalVAE` (an encoder and a decoder per modality, one shared latent). A plugin
with a joint encoder or private latents subclasses it and overrides what differs — the
networks it creates, ``condition``, ``cross_latents``, ``represent``, ``prior`` and ``decode``.
Metrics see only the methods below marked *contract*; they never reach into encoders,
decoders or the fusion rule (docs/plugins.md, "The model contract").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .distributions import Factorised, LatentFamily
from .errors import Unsupported

if TYPE_CHECKING:  # api imports this module to build the default model
    from .api import Modality, Posterior


class MultimodalVAE(nn.Module):
    """Encoders, decoders and prior over a dataset's modalities.

    ``latents_decoded`` counts the latent vectors passed through any decoder, so that an
    objective's decoder passes are measured (latents ÷ K·B), not assumed. ``fusion`` is the
    posterior whose ``condition`` combines the experts (a plain attribute: not in the state)."""

    def __init__(self, modalities: list["Modality"], latent_dim: int, family: LatentFamily,
                 fusion: "Posterior | None" = None):
        super().__init__()
        self.modalities = list(modalities)
        self.latent_dim = latent_dim
        self.family = family
        self.fusion = fusion
        self.encoders = nn.ModuleList([m.encoder(latent_dim) for m in self.modalities])
        self.decoders = nn.ModuleList([m.decoder(latent_dim) for m in self.modalities])
        self.prior_params = family.make_prior(latent_dim)
        # each modality's log_likelihood, a list so that compile_networks can wrap them
        self.likelihoods = [m.log_likelihood for m in self.modalities]
        self.latents_decoded = 0

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.modalities]

    # ------------------------------------------------------------------ the contract
    def prior(self):
        """*Contract.* p(z) over the whole latent [D]: ``.rsample(n)`` [n, D] drives joint
        generation, ``.log_prob`` the likelihood estimates."""
        loc, scale = self.prior_params()
        return Factorised(self.family, loc, scale)

    def condition(self, xs: list[Tensor | None], observed: list[int]):
        """*Contract.* q(z | x_observed) over the whole latent, for items xs (None where a
        modality is not given): ``.mean`` [B, D], ``.rsample(n)`` [n, B, D], ``.log_prob(z)``."""
        self.fusion_rule()  # before any encoder runs
        return self.fuse(self.encode(xs), observed)

    def cross_latents(self, xs: list[Tensor | None], observed: list[int]) -> Tensor:
        """*Contract.* One latent draw [B, D] from which every unobserved modality is generated
        given the observed ones (cross and subset generation). Here: one sample of
        ``condition``; a model with private latents draws the unobserved modalities' private
        parts from their own (auxiliary) priors."""
        return self.condition(xs, observed).rsample(1)[0]

    def represent(self, xs: list[Tensor | None], observed: list[int]) -> Tensor:
        """*Contract.* What a latent probe reads given the observed modalities: [B, R]. Here
        the posterior mean; a model with private latents gives its shared block."""
        return self.condition(xs, observed).mean

    def for_items(self, xs: list[Tensor | None]) -> "ItemsView":
        """*Contract.* These items, to be read given many subsets of their modalities (subset
        metrics): a view whose ``condition(observed)``, ``cross_latents(observed)`` and
        ``represent(observed)`` equal this model's methods on xs with every unobserved modality
        None. This model encodes each modality once and fuses per subset; a subclass that
        changes how the contract reads items gets a view that reads each subset afresh, unless
        it offers a faster view of its own."""
        plain = all(getattr(type(self), name) is getattr(MultimodalVAE, name)
                    for name in ("condition", "cross_latents", "represent", "encode"))
        return EncodedItems(self, xs) if plain else ItemsView(self, xs)

    def decode(self, d: int, z: Tensor) -> Tensor:
        """*Contract.* Decoder d on latents z [..., D]: one call on all of them, output
        [..., *params]."""
        flat = z.reshape(-1, z.shape[-1])
        self.latents_decoded += flat.shape[0]
        out = self.decoders[d](flat)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()  # under autocast, as in encode: likelihoods and metrics see fp32
        return unflatten_leading(out, z.shape[:-1])

    def log_likelihood(self, d: int, z: Tensor, x: Tensor) -> Tensor:
        """*Contract.* log p_d(x | z) for latents z [..., B, D] and data x [B, ...] -> [..., B]
        (unweighted)."""
        return self.likelihoods[d](self.decode(d, z), x)

    # ------------------------------------------------------------------ for objectives
    def encode(self, xs: list[Tensor | None]) -> list[Factorised | None]:
        """One expert q_m(z|x_m) per modality (None where x_m is None)."""
        return encode_experts(self.encoders, self.family, xs)

    def fuse(self, experts: list[Factorised | None], observed: list[int]):
        """q(z | x_observed) from the experts, by the posterior's fusion rule."""
        return self.fusion_rule().condition(self, experts, list(observed))

    def fusion_rule(self) -> "Posterior":
        if self.fusion is None:
            raise Unsupported("this model has no fusion rule (build it with Posterior.build_model)")
        return self.fusion


def items_view(model, xs: list[Tensor | None]) -> "ItemsView":
    """``model.for_items(xs)``, or for a model without it (one that implements the contract
    from scratch) the view that reads each subset afresh."""
    offered = getattr(model, "for_items", None)
    return offered(xs) if offered is not None else ItemsView(model, xs)


class ItemsView:
    """A model's contract on fixed items, one subset at a time (``MultimodalVAE.for_items``):
    each read is the model's own method on the items with the unobserved modalities None."""

    def __init__(self, model: MultimodalVAE, xs: list[Tensor | None]):
        self.model, self.xs = model, xs

    def given(self, observed: list[int]) -> list[Tensor | None]:
        return [x if m in observed else None for m, x in enumerate(self.xs)]

    def condition(self, observed: list[int]):
        return self.model.condition(self.given(observed), observed)

    def cross_latents(self, observed: list[int]) -> Tensor:
        return self.model.cross_latents(self.given(observed), observed)

    def represent(self, observed: list[int]) -> Tensor:
        return self.model.represent(self.given(observed), observed)


class EncodedItems(ItemsView):
    """The view of a model that reads items exactly as :class:`MultimodalVAE` does: every
    given modality encoded once, and each subset's posterior fused from those experts (the
    fusion rule reads only the observed ones), so that C(M, k) subsets cost M encoder passes."""

    def __init__(self, model: MultimodalVAE, xs: list[Tensor | None]):
        super().__init__(model, xs)
        self.experts = model.encode(xs)

    def condition(self, observed: list[int]):
        return self.model.fuse([e if m in observed else None for m, e in enumerate(self.experts)], observed)

    # as MultimodalVAE.cross_latents and .represent, from the fused posterior
    def cross_latents(self, observed: list[int]) -> Tensor:
        return self.condition(observed).rsample(1)[0]

    def represent(self, observed: list[int]) -> Tensor:
        return self.condition(observed).mean


def encode_experts(networks, family: LatentFamily, xs: list[Tensor | None]) -> list[Factorised | None]:
    """One distribution of ``family`` per network and item batch, from the network's raw output
    [B, 2·D] (None where x is None): the experts of any encoder list, shared or private."""
    experts = []
    for enc, x in zip(networks, xs):
        if x is None:
            experts.append(None)
            continue
        raw = enc(x)
        if raw.dtype in (torch.float16, torch.bfloat16):
            raw = raw.float()  # under autocast the networks run in half precision; densities stay fp32
        loc, scale = family.params(*raw.chunk(2, dim=-1))
        experts.append(Factorised(family, loc, scale))
    return experts


def unflatten_leading(t: Tensor, shape) -> Tensor:
    """``t`` [N, ...] as [*shape, ...] (N = prod(shape)) without a copy whenever ``t`` is a
    permutation of a contiguous tensor with its first dimension outermost — e.g. a
    channels-last decoder output, which ``reshape`` would copy (forward and backward)."""
    shape = tuple(shape)
    if t.is_contiguous() or t.dim() < 2:
        return t.reshape(*shape, *t.shape[1:])
    inner = sorted(range(1, t.dim()), key=lambda i: -t.stride(i))  # memory order of the other dims
    permuted = t.permute(0, *inner)
    if not permuted.is_contiguous():
        return t.reshape(*shape, *t.shape[1:])
    lead = len(shape)
    unflat = permuted.view(*shape, *permuted.shape[1:])
    back = [0] * (t.dim() - 1)  # where each of t's trailing dims sits in ``inner``
    for position, dim in enumerate(inner):
        back[dim - 1] = position
    return unflat.permute(*range(lead), *(lead + p for p in back))
