"""The second coherence judge: random ReLU features of a modality's judge features, read out by
ridge regression onto one-hot labels and fitted in closed form.

It differs from the first judge (the modality's own network trained by Adam on cross-entropy) in
both respects that could bias a coherence number: the architecture (no convolutions, no learnt
features: a fixed random projection) and the training (a linear solve with its penalty chosen on
held-out items, no stochastic optimisation). Images are fitted on shifted copies as well, since a
random projection, unlike a convolution, is not translation-tolerant by construction.

References: Rahimi & Recht, "Random Features for Large-Scale Kernel Machines", NeurIPS 2007.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RECIPE = dict(features=2000, max_shift=2, max_rows=100_000, holdout_every=10,
              penalties=(1e-4, 1e-3, 1e-2, 1e-1, 1.0), chunk=4096, seed=0)


class RandomFeatureRidge(nn.Module):
    """x -> featurise (the modality's ``judge_features``) -> standardise per item ->
    relu(f W + b) -> linear read-out: logits [B, classes]. W and b are fixed random buffers;
    only the read-out ``beta`` is fitted (by :func:`fit_ridge`)."""

    def __init__(self, featurise, in_features: int, num_classes: int, features: int, seed: int):
        super().__init__()
        self.featurise = featurise
        self.in_features, self.num_features, self.num_classes = in_features, features, num_classes
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(in_features, features, generator=gen) / in_features ** 0.5)
        self.register_buffer("bias", 2 * torch.rand(features, generator=gen) - 1)
        self.register_buffer("beta", torch.zeros(features, num_classes))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, features={self.num_features}, classes={self.num_classes}"

    def hidden(self, x: Tensor) -> Tensor:
        f = self.featurise(x).to(self.weight.dtype)
        f = (f - f.mean(1, keepdim=True)) / f.std(1, keepdim=True).clamp_min(1e-6)
        return torch.relu(f @ self.weight + self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden(x) @ self.beta


def shifts_for(x: Tensor) -> list[tuple[int, int]]:
    """The (dy, dx) copies an image pool [N, C, H, W] is fitted on: every shift within ±s pixels,
    s the largest (≤ max_shift) that keeps N·(2s+1)² within max_rows; just (0, 0) for
    anything that is not an image."""
    if x.dim() != 4:
        return [(0, 0)]
    s = RECIPE["max_shift"]
    while s > 0 and len(x) * (2 * s + 1) ** 2 > RECIPE["max_rows"]:
        s -= 1
    return [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]


def _accumulate(net: RandomFeatureRidge, x: Tensor, targets: Tensor, shifts) -> tuple[Tensor, Tensor]:
    """(HᵀH, HᵀY) in float64 over every shifted copy of x, in chunks (never all of H at once)."""
    gram = torch.zeros(net.num_features, net.num_features, dtype=torch.float64, device=x.device)
    cross = torch.zeros(net.num_features, net.num_classes, dtype=torch.float64, device=x.device)
    for dy, dx in shifts:
        for i in range(0, len(x), RECIPE["chunk"]):
            part = x[i:i + RECIPE["chunk"]]
            h = net.hidden(torch.roll(part, (dy, dx), (2, 3)) if (dy, dx) != (0, 0) else part)
            gram += (h.T @ h).double()  # float32 products, float64 sums: exact enough, twice as fast
            cross += (h.T @ targets[i:i + RECIPE["chunk"]]).double()
    return gram, cross


@torch.no_grad()
def fit_ridge(net: RandomFeatureRidge, x: Tensor, y: Tensor) -> None:
    """Fit ``net.beta``: the ridge penalty (relative to the mean diagonal of HᵀH) that scores best
    on every ``holdout_every``-th item, unshifted, when fitted on the rest; then the read-out
    at that penalty on all items. Deterministic: no random step but the fixed projection."""
    targets = F.one_hot(y, net.num_classes).to(net.weight.dtype)
    held = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    held[::RECIPE["holdout_every"]] = True
    shifts = shifts_for(x)
    gram_fit, cross_fit = _accumulate(net, x[~held], targets[~held], shifts)
    gram_held, cross_held = _accumulate(net, x[held], targets[held], shifts)
    held_hidden = net.hidden(x[held]).double()
    best = None
    for penalty in RECIPE["penalties"]:
        beta = ridge_solve(gram_fit, cross_fit, penalty)
        correct = ((held_hidden @ beta).argmax(1) == y[held]).sum().item()
        if best is None or correct >= best[0]:  # a tie goes to the larger penalty
            best = (correct, penalty)
    net.beta.copy_(ridge_solve(gram_fit + gram_held, cross_fit + cross_held, best[1]).to(net.beta.dtype))


def ridge_solve(gram: Tensor, cross: Tensor, penalty: float) -> Tensor:
    """argmin_β |Hβ − Y|² + λ|β|² from HᵀH and HᵀY, λ = penalty · mean diagonal of HᵀH (a
    penalty on the scale of the features, whatever their number and magnitude)."""
    ridge = gram + penalty * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    return torch.cholesky_solve(cross, torch.linalg.cholesky(ridge))
