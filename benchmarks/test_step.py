"""One training step (forward + backward) of each posterior on MMVAE's MNIST–SVHN architectures
(Appendix F: MNIST MLP 784-400-D, SVHN conv 32-64-128; D = 20, batch 128, K = 30), synthetic
tensors, the plugin's stacked implementation against a naive per-expert Python loop of the
same objective. Before timing, each pair is checked to give the same bound and the same
gradients on the same samples.

    pytest benchmarks/ --benchmark-only                       # all four, both implementations
    pytest benchmarks/test_step.py --benchmark-only -k moe    # one posterior

Groups are posteriors; the ratio of the two medians in a group is the speed-up of stacking.
Environment: MMBENCH_BENCH_BATCH, MMBENCH_BENCH_K, MMBENCH_BENCH_ROUNDS shrink the grid.

References: Shi et al., NeurIPS 2019 (MMVAE), Eq. 3, Eq. 5, Appendix B, Appendix C (DReG);
Wu & Goodman, NeurIPS 2018 (MVAE).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from mmbench.distributions import log_mean_exp, normal_kl
from mmbench.modalities import ImageModality
from mmbench.plugins import get_plugins

BATCH = int(os.environ.get("MMBENCH_BENCH_BATCH", 128))
K = int(os.environ.get("MMBENCH_BENCH_K", 30))
ROUNDS = int(os.environ.get("MMBENCH_BENCH_ROUNDS", 3))
LATENT = 20


def mnist_svhn_modalities():
    """Appendix F's networks; λ_MNIST = 3·32·32 / (28·28) as in the paper's code."""
    return [ImageModality("mnist", (1, 28, 28), arch="mlp", weight=3 * 32 * 32 / (28 * 28)),
            ImageModality("svhn", (3, 32, 32), arch="conv")]


# ------------------------------------------------------------------ naive per-expert loops
def _experts(model, xs):
    """Each expert encoded on its own (one call per modality, no stacking)."""
    return [model.encode([x if j == m else None for j, x in enumerate(xs)])[m] for m, x in enumerate(xs)]


def _samples(model, experts, K, eps):
    """z_m [K, B, D] per expert: drawn one expert at a time, or rebuilt from given noise ε."""
    if eps is None:
        return [e.rsample(K) for e in experts]
    return [e.loc + e.scale * eps[:, m] for m, e in enumerate(experts)]


def naive_moe(model, xs, K, *, tight=False, estimator="dreg", eps=None):
    """Eq. 3 (or Eq. 5 when ``tight``) with a Python loop over experts m, decoders d and
    mixture components j: M² decoder calls of K·B latents each. Returns (loss, bound)."""
    experts = _experts(model, xs)
    zs = _samples(model, experts, K, eps)
    prior, M = model.prior(), len(xs)
    log_ws = []
    for m, z in enumerate(zs):
        log_p = prior.log_prob(z)
        for d, x in enumerate(xs):
            log_p = log_p + model.weights[d] * model.log_likelihood(d, z, x)
        comps = []
        for e in experts:
            loc, scale = (e.loc.detach(), e.scale.detach()) if estimator == "dreg" else (e.loc, e.scale)
            comps.append(model.family.log_prob(z, loc, scale))
        log_ws.append(log_p - (torch.logsumexp(torch.stack(comps), 0) - math.log(M)))
    if tight:
        everything = torch.cat(log_ws)  # [M·K, B]
        bound = log_mean_exp(everything, 0)
    else:
        bound = torch.stack([log_mean_exp(lw, 0) for lw in log_ws]).mean(0)
    if estimator != "dreg":
        return -bound.mean(), bound.mean().detach()
    norm = torch.logsumexp(torch.cat(log_ws).detach(), 0) if tight else None
    surrogate = 0.0
    for z, lw in zip(zs, log_ws):
        w = torch.exp(lw.detach() - (norm if tight else torch.logsumexp(lw.detach(), 0)))
        z.register_hook(lambda g, w=w: g * w.unsqueeze(-1))
        surrogate = surrogate + (w * lw).sum(0) / (1 if tight else M)
    return -surrogate.mean(), bound.mean().detach()


def naive_is_elbo(model, xs, K, *, eps=None, **_):
    """Appendix B with a loop over experts i and j; decoder j runs once on its own samples."""
    experts = _experts(model, xs)
    zs = _samples(model, experts, K, eps)
    prior, M = model.prior(), len(xs)
    weighted = [model.weights[j] * model.log_likelihood(j, z, x) for j, (z, x) in enumerate(zip(zs, xs))]
    total = 0.0
    for i, z in enumerate(zs):
        log_q_mix = torch.logsumexp(torch.stack([e.log_prob(z) for e in experts]), 0) - math.log(M)
        total = total + (prior.log_prob(z) + weighted[i] - log_q_mix).mean(0)
        for j, zj in enumerate(zs):
            if j != i:
                ratio = torch.exp(experts[i].log_prob(zj) - experts[j].log_prob(zj).detach())
                total = total + (ratio * weighted[j]).mean(0)
    value = total / M
    return -value.mean(), value.mean().detach()


def naive_poe(model, xs, K, *, eps=None, **_):
    """MVAE: the full set and each single modality, a product and a decoder loop per subset."""
    experts = _experts(model, xs)
    M = len(xs)
    subsets = [list(range(M))] + ([[m] for m in range(M)] if M > 1 else [])
    prior_loc, prior_scale = model.prior_params()
    total, full = 0.0, None
    for s, subset in enumerate(subsets):
        precision, weighted_mean = 1.0, 0.0
        for m in subset:
            precision = precision + experts[m].scale.pow(-2)
            weighted_mean = weighted_mean + experts[m].loc * experts[m].scale.pow(-2)
        loc, scale = weighted_mean / precision, precision.rsqrt()
        noise = torch.randn(K, *loc.shape, dtype=loc.dtype) if eps is None else eps[:, s]
        z = loc + scale * noise
        recon = sum(model.weights[d] * model.log_likelihood(d, z, xs[d]) for d in subset)
        elbo = recon.mean(0) - normal_kl(loc, scale, prior_loc, prior_scale)
        total = total + elbo
        full = elbo if full is None else full
    return -total.mean(), full.mean().detach()


NAIVE = {"moe": naive_moe, "moe-tight": lambda *a, **k: naive_moe(*a, tight=True, **k),
         "is-elbo": naive_is_elbo, "poe": naive_poe}


# ------------------------------------------------------------------ the check and the timing
def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _same_objective(posterior, model, xs, K, estimator):
    """The stacked and the loop implementation on identical samples: bound and gradients."""
    draws = []
    rsample = posterior.family.rsample

    def recording(loc, scale, n):
        z = rsample(loc, scale, n)
        draws.append(((z - loc) / scale).detach())
        return z

    posterior.family.rsample = recording  # an instance attribute: the class method is untouched
    try:
        torch.manual_seed(0)
        result = posterior.objective(model, xs, K, estimator)
        stacked = _grads(model, result.loss)
    finally:
        del posterior.family.rsample
    loss, bound = NAIVE[posterior.name](model, xs, K, estimator=estimator, eps=draws[0])
    looped = _grads(model, loss)
    assert torch.allclose(result.bound, bound, rtol=1e-4, atol=1e-2), (result.bound, bound)
    assert torch.allclose(result.loss, loss, rtol=1e-4, atol=1e-2), (result.loss, loss)
    for a, b in zip(stacked, looped):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item() + 1e-6)


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


@pytest.mark.parametrize("impl", ["stacked", "loop"])
@pytest.mark.parametrize("name", ["moe", "moe-tight", "is-elbo", "poe"])
def test_training_step(benchmark, plugins, name, impl):
    posterior = plugins.posteriors.get(name)
    torch.manual_seed(0)
    model = posterior.build_model(mnist_svhn_modalities(), LATENT)
    xs = [torch.rand(BATCH, *m.shape) for m in model.modalities]
    estimator = posterior.estimators[0]
    if impl == "loop":
        # same samples, same bound, same gradients (checked on a small batch to keep it quick)
        _same_objective(posterior, model, [x[:8] for x in xs], 4, estimator)

    def step():
        if impl == "stacked":
            loss = posterior.objective(model, xs, K, estimator).loss
        else:
            loss = NAIVE[name](model, xs, K, estimator=estimator)[0]
        model.zero_grad(set_to_none=True)
        loss.backward()

    benchmark.group = f"{name} step, MNIST-SVHN, batch {BATCH}, K {K}"
    benchmark.extra_info.update(posterior=name, impl=impl, batch=BATCH, K=K, threads=torch.get_num_threads(),
                                decoder_passes=posterior.decoder_passes(2))
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1, iterations=1)
