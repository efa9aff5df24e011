"""Per-dimension KL divergences of posteriors, estimated by Monte Carlo through the latent
family's density, so that any diagonal family and the MoE mixture are handled alike.

For a diagonal distribution the marginal of dimension d is the family's 1-d density at
(loc_d, scale_d); for a uniform mixture it is the mixture of its components' marginals; for
independent blocks (``Concatenated``: a shared and private latents) each block's own marginals.
KL_d(q || p) = E_{z~q}[log q_d(z_d) − log p_d(z_d)], per item, averaged over items.

References: Shi et al., NeurIPS 2019 (MMVAE), Figure 7 (per-dimension KL to the prior).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench.distributions import log_mean_exp


def per_dim_log_prob(q, z: Tensor) -> Tensor:
    """log q_d(z_d) for every dimension d: [..., D] (no sum over the latent dimension)."""
    components = getattr(q, "components", None)
    if components is not None:
        return log_mean_exp(torch.stack([per_dim_log_prob(c, z) for c in components]), 0)
    parts = getattr(q, "parts", None)
    if parts is not None:
        blocks = z.split(q.sizes, dim=-1)
        return torch.cat([per_dim_log_prob(p, b) for p, b in zip(parts, blocks)], dim=-1)
    # The family sums over the last dimension; a trailing singleton makes that sum a no-op.
    return q.family.log_prob(z.unsqueeze(-1), q.loc.unsqueeze(-1), q.scale.unsqueeze(-1))


@torch.no_grad()
def kl_per_dim(q, p, samples: int = 64) -> Tensor:
    """KL(q || p) per latent dimension [D], averaged over q's items (Monte Carlo)."""
    z = q.rsample(samples)  # [S, B, D]
    return (per_dim_log_prob(q, z) - per_dim_log_prob(p, z)).mean((0, 1))


def symmetric_kl_per_dim(q1, q2, samples: int = 64) -> Tensor:
    """KL(q1 || q2) + KL(q2 || q1) per latent dimension [D], averaged over items."""
    return kl_per_dim(q1, q2, samples) + kl_per_dim(q2, q1, samples)
