"""The four posteriors' objectives proved against what MATH.md says they compute.

- On a model whose log p(x) is exact (linear-Gaussian modalities, a 2-D latent, numerical
  integration on a grid): ELBO ≤ moe (Eq. 3) ≤ moe-tight (Eq. 5) ≤ log p(x) in expectation,
  each bound approaching its K → ∞ limit; is-elbo (Appendix B) and poe estimate their ELBOs
  without bias.
- DReG (MMVAE Appendix C, Tucker et al. 2019): autograd's gradient equals an explicit
  per-sample computation (w̃² path derivatives for encoders, w̃ ∇ log w for decoders and prior),
  and differs both from plain IWAE and from the reference code's w̃·path (its hook never fired).
- is-elbo and poe: value and gradients equal a scalar loop transcription of the formula;
  decoder passes are counted, not assumed (M for is-elbo, M² for moe).

References: Shi et al., NeurIPS 2019 (MMVAE); Wu & Goodman, NeurIPS 2018 (MVAE).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmbench.api import Modality
from mmbench.distributions import normal_log_prob

D = 2  # latent size: small enough to integrate on a grid


# These tensors are small: one thread is faster, and much faster on a shared, busy CPU.
pytestmark = pytest.mark.usefixtures("single_thread")


class LinearGaussian(Modality):
    """x ∈ R^n with p(x|z) = N(Wz + b, σ²I): a modality whose evidence a grid integrates."""

    def __init__(self, name: str, dim: int, sigma: float = 1.0, weight: float = 1.0):
        self.name, self.shape, self.sigma, self.weight = name, (dim,), sigma, weight

    def encoder(self, latent_dim):
        return nn.Linear(self.shape[0], 2 * latent_dim)

    def decoder(self, latent_dim):
        return nn.Linear(latent_dim, self.shape[0])

    def log_likelihood(self, out, x):
        return normal_log_prob(x, out, self.sigma).sum(-1)

    def decode_mean(self, out):
        return out


def toy_model(posterior, dims=(3, 2), seed=0, weights=None):
    torch.manual_seed(seed)
    weights = weights or [1.0] * len(dims)
    mods = [LinearGaussian(f"x{i}", n, weight=w) for i, (n, w) in enumerate(zip(dims, weights))]
    model = posterior.build_model(mods, D).double()
    with torch.no_grad():
        for enc in model.encoders:  # experts that disagree, so the mixture and strata matter;
            enc.bias[:D].normal_(0, 1.5)  # scales near one, so a grid resolves them
            enc.bias[D:].normal_(0, 0.3)
            enc.weight[D:] *= 0.3
    return model


def observation(model, seed=1):
    """One item drawn from the model itself, [1, n] per modality."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, D, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return [model.decoders[d](z) + m.sigma * torch.randn(1, *m.shape, generator=g, dtype=torch.float64)
                for d, m in enumerate(model.modalities)]


# ------------------------------------------------------------------ exact values by integration
def _grid(half_width=12.0, n=801):
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    zz = torch.cartesian_prod(t, t)  # [G, 2]
    return zz[:, None, :], (t[1] - t[0]).item() ** 2  # [G, 1, D] (one batch item), cell area


@torch.no_grad()
def exact_values(model, xs):
    """By quadrature: log p(x), the mixture ELBO, the limit of Eq. 3 as K → ∞, and per-expert
    log E_{q_m}[p(z,x)/q_Φ(z|x)] — all for λ-weighted log p(z, x)."""
    z, area = _grid()
    log_joint = model.prior().log_prob(z)
    for d, x in enumerate(xs):
        log_joint = log_joint + model.weights[d] * model.log_likelihood(d, z, x)
    experts = model.encode(xs)
    log_q = torch.stack([e.log_prob(z) for e in experts])  # [M, G, 1]
    log_q_mix = torch.logsumexp(log_q, 0) - math.log(len(experts))
    integral = lambda log_f: (torch.logsumexp(log_f, 0) + math.log(area)).item()  # noqa: E731
    log_px = integral(log_joint)
    q_mix = torch.exp(log_q_mix)
    elbo = (q_mix * (log_joint - log_q_mix)).sum().item() * area
    strata = [integral(log_q[m] + log_joint - log_q_mix) for m in range(len(experts))]
    # sanity of the quadrature itself: every expert integrates to one
    for m in range(len(experts)):
        assert abs(math.exp(integral(log_q[m])) - 1) < 1e-3
    return {"log_px": log_px, "elbo": elbo, "moe_limit": sum(strata) / len(strata), "strata": strata}


def mc_bound(posterior, model, xs, K, replicates=2000, chunks=20, estimator=None):
    """Mean and standard error of the posterior's logged bound over independent replicates
    of the same item (the objective averages a batch; chunks give the spread)."""
    estimator = estimator or posterior.estimators[0]
    per = replicates // chunks
    batch = [x.expand(per, *x.shape[1:]) for x in xs]
    values = []
    with torch.no_grad():
        for _ in range(chunks):
            values.append(posterior.objective(model, batch, K, estimator).bound.item())
    values = torch.tensor(values)
    return values.mean().item(), values.std().item() / math.sqrt(chunks)


def test_moe_bounds_are_ordered_and_approach_their_limits(plugins):
    moe, tight, iselbo = (plugins.posteriors.get(n) for n in ("moe", "moe-tight", "is-elbo"))
    model = toy_model(moe, seed=1)
    xs = observation(model, seed=2)
    exact = exact_values(model, xs)
    torch.manual_seed(0)
    log_px, elbo, limit = exact["log_px"], exact["elbo"], exact["moe_limit"]
    # The toy is not trivial: the mixture is a poor posterior and the experts' strata differ.
    assert log_px - elbo > 1.0
    assert log_px - limit > 0.1

    est = {(name, K): mc_bound(p, model, xs, K) for name, p in (("moe", moe), ("tight", tight))
           for K in (1, 10, 100)}
    tol = lambda *keys: 4 * math.sqrt(sum(est[k][1] ** 2 for k in keys)) + 1e-3  # noqa: E731

    # K = 1: Eq. 3 is the mixture's (stratified) ELBO; Eq. 5 is already an M-sample bound.
    assert abs(est["moe", 1][0] - elbo) < tol(("moe", 1))
    assert est["tight", 1][0] > elbo + 1.0
    # is-elbo estimates the same ELBO without bias (Appendix B), with any K.
    is_mean, is_se = mc_bound(iselbo, model, xs, 5)
    assert abs(is_mean - elbo) < 4 * is_se + 1e-3
    for K in (10, 100):
        # ELBO ≤ moe ≤ moe-tight ≤ log p(x), in expectation.
        assert elbo < est["moe", K][0] + tol(("moe", K))
        assert est["moe", K][0] <= est["tight", K][0] + tol(("moe", K), ("tight", K))
        assert est["tight", K][0] < log_px + tol(("tight", K))
        # moe's limit is Σ_m log E_{q_m}[p/q_Φ] / M, below log p(x) by Jensen — not log p(x).
        assert est["moe", K][0] < limit + tol(("moe", K))
    # Each tightens with K and reaches its limit: moe-tight reaches log p(x).
    assert est["moe", 10][0] > est["moe", 1][0] + 0.1 and est["moe", 100][0] > est["moe", 10][0]
    assert est["tight", 10][0] > est["tight", 1][0] + 0.1 and est["tight", 100][0] > est["tight", 10][0]
    assert limit - est["moe", 100][0] < 0.05 * (limit - elbo)
    assert log_px - est["tight", 100][0] < 0.05 * (log_px - elbo)
    # and at large K the tight bound is strictly above the stratified one
    assert est["tight", 100][0] - est["moe", 100][0] > 0.5 * (log_px - limit)


def test_poe_full_set_bound_is_its_elbo(plugins):
    poe = plugins.posteriors.get("poe")
    model = toy_model(poe)
    xs = observation(model)
    z, area = _grid()
    with torch.no_grad():
        log_joint = model.prior().log_prob(z) + sum(model.log_likelihood(d, z, x) for d, x in enumerate(xs))
        q = poe.condition(model, model.encode(xs), [0, 1])
        log_q = q.log_prob(z)
        elbo = (torch.exp(log_q) * (log_joint - log_q)).sum().item() * area
        log_px = (torch.logsumexp(log_joint, 0) + math.log(area)).item()
    torch.manual_seed(0)
    mean, se = mc_bound(poe, model, xs, 3)
    assert abs(mean - elbo) < 4 * se + 1e-3
    assert elbo < log_px


# ------------------------------------------------------------------ recording the samples
class RecordingFamily:
    """Wraps a latent family, remembering (loc, scale, z) of every rsample so that a test
    can rebuild the same samples as z = loc + scale·ε (both families are location-scale)."""

    def __init__(self, family):
        self.family, self.draws = family, []

    def __getattr__(self, name):
        return getattr(self.family, name)

    def rsample(self, loc, scale, n):
        z = self.family.rsample(loc, scale, n)
        self.draws.append(((z - loc) / scale).detach())
        return z


def small_setup(posterior, M=2, K=4, B=3, seed=0):
    model = toy_model(posterior, dims=(3, 2, 4, 2)[:M], seed=seed, weights=[1.5, 1.0, 0.5, 2.0][:M])
    g = torch.Generator().manual_seed(seed + 7)
    xs = [torch.randn(B, *m.shape, generator=g, dtype=torch.float64) for m in model.modalities]
    return model, xs


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def run_recorded(posterior, model, xs, K, estimator, seed=3):
    """The plugin's loss gradients and the standardised noise ε it drew."""
    recorder = RecordingFamily(model.family)
    model.family = recorder
    try:
        torch.manual_seed(seed)
        result = posterior.objective(model, xs, K, estimator)
        g = grads(model, result.loss)
    finally:
        model.family = recorder.family
    return result, g, recorder.draws


def params_of(modules):
    return [p for mod in modules for p in mod.parameters()]


# ------------------------------------------------------------------ DReG, explicit
def explicit_dreg(model, xs, eps, normalise_over_experts: bool, power_enc: int = 2):
    """Σ over items and samples of w̃^power ∂log w/∂z · dz/dφ (encoders) and w̃ ∇_θ log w
    (decoders, prior), one sample at a time. Returns gradients of the *negative* estimator,
    in model.parameters() order, scaled as the objective is (1/B, and 1/M for Eq. 3)."""
    experts = model.encode(xs)
    M, K, B = len(xs), eps.shape[0], xs[0].shape[0]
    enc_params = params_of(model.encoders)
    theta = params_of([model.decoders, model.prior_params])

    def log_w(m, b, z):  # log p(z) + Σ_d λ_d log p_d(x_d|z) − log q_Φ(z|x), q's parameters detached
        value = model.prior().log_prob(z)
        for d, x in enumerate(xs):
            value = value + model.weights[d] * model.log_likelihood(d, z[None], x[b:b + 1])[0]
        comps = [model.family.log_prob(z, e.loc[b].detach(), e.scale[b].detach()) for e in experts]
        return value - (torch.logsumexp(torch.stack(comps), 0) - math.log(M))

    z = [[[experts[m].loc[b] + experts[m].scale[b] * eps[k, m, b] for b in range(B)] for k in range(K)]
         for m in range(M)]
    lw = torch.tensor([[[log_w(m, b, z[m][k][b].detach()).item() for b in range(B)] for k in range(K)]
                       for m in range(M)], dtype=torch.float64)
    dims = (0, 1) if normalise_over_experts else (1,)
    w = torch.exp(lw - torch.logsumexp(lw, dim=dims, keepdim=True))
    scale = 1.0 / B / (1 if normalise_over_experts else M)
    g_enc = [torch.zeros_like(p) for p in enc_params]
    g_theta = [torch.zeros_like(p) for p in theta]
    for m in range(M):
        for k in range(K):
            for b in range(B):
                leaf = z[m][k][b].detach().requires_grad_()
                (dlw_dz,) = torch.autograd.grad(log_w(m, b, leaf), leaf)
                path = torch.autograd.grad(z[m][k][b], enc_params, grad_outputs=dlw_dz, retain_graph=True,
                                           allow_unused=True)
                direct = torch.autograd.grad(log_w(m, b, leaf.detach()), theta, allow_unused=True)
                for acc, g in zip(g_enc, path):
                    if g is not None:
                        acc -= scale * w[m, k, b] ** power_enc * g
                for acc, g in zip(g_theta, direct):
                    if g is not None:
                        acc -= scale * w[m, k, b] * g
    by_id = {id(p): g for p, g in zip(enc_params + theta, g_enc + g_theta)}
    return [by_id[id(p)] for p in model.parameters()]


def close(a, b, tol=1e-9):
    return all(torch.allclose(x, y, atol=tol, rtol=1e-7) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["moe", "moe-tight"])
def test_dreg_gradient_is_the_explicit_estimator(plugins, name):
    posterior = plugins.posteriors.get(name)
    assert posterior.estimators[0] == "dreg"  # the paper's choice is the default
    model, xs = small_setup(posterior, M=2, K=4, B=3)
    result, autograd, draws = run_recorded(posterior, model, xs, 4, "dreg")
    (eps,) = draws
    tight = name == "moe-tight"
    explicit = explicit_dreg(model, xs, eps, normalise_over_experts=tight)
    assert close(autograd, explicit)
    # The hook fired: the reference code's w̃·path (no second w̃) is a different gradient ...
    buggy = explicit_dreg(model, xs, eps, normalise_over_experts=tight, power_enc=1)
    n_enc = len(params_of(model.encoders))
    assert not close(autograd[:n_enc], buggy[:n_enc], tol=1e-6)
    # ... and so is plain IWAE's, on the same samples; the logged value is the bound in both.
    iwae, iwae_grads, _ = run_recorded(posterior, model, xs, 4, "iwae")
    assert torch.allclose(iwae.bound, result.bound)
    assert not close(autograd[:n_enc], iwae_grads[:n_enc], tol=1e-6)
    # DReG changes the encoders' estimator only: decoders and prior get Σ w̃ ∇ log w = ∇ IWAE.
    assert close(autograd[n_enc:], iwae_grads[n_enc:])


def test_unknown_estimator_is_refused(plugins):
    moe = plugins.posteriors.get("moe")
    model, xs = small_setup(moe)
    with pytest.raises(ValueError, match="estimator"):
        moe.objective(model, xs, 2, "reinforce")


# ------------------------------------------------------------------ is-elbo, loop transcription
def loop_is_elbo(model, xs, eps, baseline=False):
    """Appendix B written as scalar loops over experts i, j, samples k and items b; with
    ``baseline``, each cross term's f_k carries the leave-one-out control variate b_k."""
    experts = model.encode(xs)
    M, K, B = len(xs), eps.shape[0], xs[0].shape[0]
    prior, lam = model.prior(), model.weights
    total = 0.0
    for b in range(B):
        q = lambda i, z: model.family.log_prob(z, experts[i].loc[b], experts[i].scale[b])  # noqa: E731
        loglik = lambda d, z: model.log_likelihood(d, z[None], xs[d][b:b + 1])[0]  # noqa: E731
        z = [[experts[j].loc[b] + experts[j].scale[b] * eps[k, j, b] for k in range(K)] for j in range(M)]
        for i in range(M):
            for k in range(K):
                log_q_mix = torch.logsumexp(torch.stack([q(j, z[i][k]) for j in range(M)]), 0) - math.log(M)
                total = total + (prior.log_prob(z[i][k]) + lam[i] * loglik(i, z[i][k]) - log_q_mix) / K
            for j in range(M):
                if j == i:
                    continue
                f = [lam[j] * loglik(j, z[j][k]) for k in range(K)]
                for k in range(K):
                    ratio = torch.exp(q(i, z[j][k]) - q(j, z[j][k]).detach())
                    if baseline:
                        b_k = (sum(f[:k] + f[k + 1:]) / (K - 1)).detach()
                        total = total + (ratio * (f[k] - b_k) + b_k) / K
                    else:
                        total = total + ratio * f[k] / K
    return total / (M * B)


@pytest.mark.parametrize("estimator", ["reparam", "baseline"])
@pytest.mark.parametrize("M", [2, 3])
def test_is_elbo_matches_a_loop_transcription(plugins, M, estimator):
    posterior = plugins.posteriors.get("is-elbo")
    model, xs = small_setup(posterior, M=M, K=3, B=2)
    result, autograd, (eps,) = run_recorded(posterior, model, xs, 3, estimator)
    value = loop_is_elbo(model, xs, eps, baseline=estimator == "baseline")
    assert torch.allclose(result.bound, value.detach(), atol=1e-10)
    assert close(autograd, grads(model, -value))


def test_is_elbo_baseline_is_unbiased_and_steadier(plugins):
    """Over many draws the leave-one-out control variate leaves the mean value and the mean
    gradient where they were (within Monte Carlo error) and shrinks the gradient's spread."""
    posterior = plugins.posteriors.get("is-elbo")
    # λ = 40: log-likelihoods far below zero, as images' are: the offset the control variate
    # takes out of the cross terms
    model = toy_model(posterior, dims=(3, 2), seed=0, weights=[40.0, 40.0])
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(3, *m.shape, generator=g, dtype=torch.float64) for m in model.modalities]
    draws = {}
    for estimator in ("reparam", "baseline"):
        values, gradients = [], []
        for seed in range(600):
            torch.manual_seed(seed)
            result = posterior.objective(model, xs, 2, estimator)
            values.append(result.bound)
            gradients.append(torch.cat([g.flatten() for g in grads(model, result.loss)]))
        draws[estimator] = torch.stack(values), torch.stack(gradients)
    (v0, g0), (v1, g1) = draws["reparam"], draws["baseline"]
    n = len(v0)
    stderr = ((v0.var() + v1.var()) / n).sqrt()
    assert (v0.mean() - v1.mean()).abs() < 4 * stderr
    g_stderr = ((g0.var(0) + g1.var(0)) / n).sqrt()
    z = (g0.mean(0) - g1.mean(0)).abs() / g_stderr.clamp_min(1e-12)
    assert (z < 4.5).all(), z.max()
    assert g1.var(0).sum() < 0.6 * g0.var(0).sum()  # the whole gradient's variance shrinks (0.43 of it here)


# ------------------------------------------------------------------ poe, loop transcription
def loop_poe(model, xs, eps):
    """MVAE's training sum: ELBO of the full set plus each single modality, each reconstructing
    the modalities it observes; product with a N(0, I) prior expert written out per expert."""
    experts = model.encode(xs)
    M, K, B = len(xs), eps.shape[0], xs[0].shape[0]
    subsets = [list(range(M))] + [[m] for m in range(M)]
    total, full = 0.0, 0.0
    for s, subset in enumerate(subsets):
        for b in range(B):
            precision, weighted_mean = torch.ones(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
            for m in subset:
                precision = precision + experts[m].scale[b] ** -2
                weighted_mean = weighted_mean + experts[m].loc[b] * experts[m].scale[b] ** -2
            loc, scale = weighted_mean / precision, precision ** -0.5
            kl = 0.5 * (scale**2 + loc**2 - 1 - torch.log(scale**2)).sum()
            recon = 0.0
            for k in range(K):
                z = loc + scale * eps[k, s, b]
                for d in subset:
                    recon = recon + model.weights[d] * model.log_likelihood(d, z[None], xs[d][b:b + 1])[0] / K
            total = total + (recon - kl) / B
            if s == 0:
                full = full + (recon - kl).detach() / B
    return total, full


@pytest.mark.parametrize("M", [2, 3])
def test_poe_matches_a_loop_transcription(plugins, M):
    posterior = plugins.posteriors.get("poe")
    model, xs = small_setup(posterior, M=M, K=3, B=2)
    recorder = RecordingFamily(posterior.family)
    posterior.family = recorder  # the instance attribute shadows the class's family for this test
    try:
        torch.manual_seed(3)
        result = posterior.objective(model, xs, 3, "reparam")
        autograd = grads(model, result.loss)
    finally:
        del posterior.family
    (eps,) = recorder.draws
    total, full = loop_poe(model, xs, eps)
    assert torch.allclose(result.bound, full, atol=1e-10)  # logged: the full set's ELBO
    assert torch.allclose(result.loss, -total, atol=1e-10)  # trained: the sum of all M + 1 terms
    assert close(autograd, grads(model, -total))


# ------------------------------------------------------------------ decoder passes, counted
@pytest.mark.parametrize("name,cost", [("moe", lambda M: M * M), ("moe-tight", lambda M: M * M),
                                       ("is-elbo", lambda M: M), ("poe", lambda M: 2 * M)])
@pytest.mark.parametrize("M", [2, 3, 4])
def test_decoder_passes_are_counted(plugins, name, cost, M):
    posterior = plugins.posteriors.get(name)
    model, xs = small_setup(posterior, M=M, K=5, B=3)
    before = model.latents_decoded
    result = posterior.objective(model, xs, 5, posterior.estimators[0])
    counted = (model.latents_decoded - before) / (5 * 3)
    assert counted == result.decoder_passes == posterior.decoder_passes(M) == cost(M)
