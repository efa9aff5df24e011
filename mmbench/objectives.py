"""Training objectives as pure functions of log-weights and log-densities.

Each takes tensors the model computed and returns a per-item bound (shape [B]) or a
surrogate whose gradient is the wanted estimator. Equation numbers are those of Shi et al.,
"Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models",
NeurIPS 2019 (MMVAE).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributions import log_mean_exp


def stratified_iwae(log_w: Tensor) -> Tensor:
    """Eq. 3: (1/M) Σ_m [logsumexp_k log w_m^k − log K]. log_w: [M, K, B] -> [B]."""
    return log_mean_exp(log_w, 1).mean(0)


def tight_iwae(log_w: Tensor) -> Tensor:
    """Eq. 5: logsumexp_{m,k} log w_m^k − log(M·K). log_w: [M, K, B] -> [B]."""
    return log_mean_exp(log_w, (0, 1))


def normalised_weights(log_w: Tensor, dims) -> Tensor:
    """w̃: the importance weights normalised over ``dims``, with no gradient."""
    log_w = log_w.detach()
    return torch.exp(log_w - torch.logsumexp(log_w, dim=dims, keepdim=True))


def dreg_surrogate(log_w: Tensor, z: Tensor, dims, beta: float = 1.0) -> Tensor:
    """DReG (Tucker et al. 2019; MMVAE Appendix C): a surrogate Σ w̃ log w over ``dims``.

    ``log_w`` must have been computed with the encoders' parameters detached inside log q,
    so that the encoders are reached only through ``z``. A hook on ``z`` — the very tensor
    that feeds the decoders and densities — multiplies its gradient by w̃ once more, so the
    encoders receive Σ w̃² ∂log w/∂z · dz/dφ while decoder and prior parameters receive
    Σ w̃ ∇ log w. Returns the per-item surrogate with ``dims`` summed out.

    ``beta``: for log-weights whose log q enters scaled, log w = f(z) − β log q_φ(z) (a
    β-weighted bound, as MMVAE+'s), the score term −β Σ w̃ ∂_φ log q becomes, by the same
    reparameterisation identity, −β Σ w̃(1 − w̃) ∂log w/∂z · dz/dφ, so the encoders' factor is
    (1 − β) w̃ + β w̃²: the hook multiplies by (1 − β) + β w̃. β = 1 is the plain estimator.
    """
    w = normalised_weights(log_w, dims)
    factor = w if beta == 1.0 else (1.0 - beta) + beta * w
    if z.requires_grad:
        z.register_hook(lambda grad: grad * factor.unsqueeze(-1).to(grad.dtype))
    return (w * log_w).sum(dim=dims)


def importance_sampled_elbo(
    log_prior: Tensor, weighted_loglik: Tensor, log_q_joint: Tensor, log_q_cross: Tensor,
    baseline: bool = False,
) -> Tensor:
    """Appendix B, the multimodal importance-sampled ELBO, linear in M.

    Samples z_j^k ~ q_j(z|x_j) for each expert j. Arguments, each over experts j and samples k:

    - ``log_prior`` [M, K, B]: log p(z_j^k)
    - ``weighted_loglik`` [M, K, B]: λ_j log p_j(x_j | z_j^k) (decoder j on its own samples only)
    - ``log_q_joint`` [M, K, B]: log q_Φ(z_j^k | x), the mixture density
    - ``log_q_cross`` [I, M, K, B]: log q_i(z_j^k | x_i) for every expert i

    L = (1/M) Σ_i { E_{z_i}[log p(z_i) + λ_i log p_i(x_i|z_i) − log q_Φ(z_i|x)]
                   + Σ_{j≠i} E_{z_j}[ q_i(z_j|x_i) / sg(q_j(z_j|x_j)) · λ_j log p_j(x_j|z_j) ] }

    The ratio's denominator carries no gradient; ratios are formed in log space.
    Returns the per-item value [B].

    ``baseline`` (mmbench's addition, not the paper's): in each cross term, f = λ_j log p_j(x_j|z_j^k)
    is replaced by (f − b^k) + b^k with b^k = sg(mean of f over the *other* samples k' ≠ k) — a
    leave-one-out control variate. Since E_{q_j}[q_i/q_j] = 1 and b^k does not depend on z_j^k,
    the estimate and its gradient stay unbiased; what goes is the term b·∇(q_i/q_j), zero in
    expectation but huge in practice (f is hundreds of nats below zero), which otherwise pushes
    each q_i away from the other experts' samples. Needs K ≥ 2 (with K = 1 there is no other
    sample, and the plain estimator is used).
    """
    M = log_prior.shape[0]
    own = (log_prior + weighted_loglik - log_q_joint).mean(1)  # [M, B]
    self_density = torch.diagonal(log_q_cross, dim1=0, dim2=1).movedim(-1, 0)  # [M, K, B]
    ratio = torch.exp(log_q_cross - self_density.detach().unsqueeze(0))  # [I, J, K, B]
    off_diagonal = ~torch.eye(M, dtype=torch.bool, device=log_prior.device)
    ratio = ratio * off_diagonal[:, :, None, None]
    f = weighted_loglik.unsqueeze(0)  # [1, J, K, B]
    K = weighted_loglik.shape[1]
    if baseline and K > 1:
        leave_one_out = ((weighted_loglik.sum(1, keepdim=True) - weighted_loglik) / (K - 1)).detach()  # [J, K, B]
        b = leave_one_out.unsqueeze(0)
        cross = (ratio * (f - b) + off_diagonal[:, :, None, None] * b).mean(2).sum(1)  # [I, B]
    else:
        cross = (ratio * f).mean(2).sum(1)  # [I, B]
    return (own + cross).mean(0)
