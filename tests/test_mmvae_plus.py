"""mmvae-plus (Palumbo, Daunhawer, Vogt, ICLR 2023) against its formula and its contract.

- The bound equals a scalar loop transcription of the MMVAE+ log-weights inside MMVAE's
  stratified IWAE (Eq. 3), in value and gradient, on the same recorded samples.
- DReG with β: autograd's gradient equals the explicit estimator — encoders (1 − β) w̃ + β w̃²
  times the path derivative, decoders and auxiliary priors w̃ ∇ log w — and, with one modality
  (where DReG is exact), its mean equals plain IWAE's mean while the β-blind w̃² factor's does not.
- The model contract: the whole latent [u, w_1..w_M]; decoders read [u, w_d] only; condition
  draws unobserved private latents from the prior, cross_latents from the auxiliary prior.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.objectives import dreg_surrogate, stratified_iwae
from mmbench.testing import check_posterior
from test_objectives import LinearGaussian, close, grads, run_recorded

from mmbench_mmvae_plus import log_weights
from mmbench_pictures.divergence import per_dim_log_prob

pytestmark = pytest.mark.usefixtures("single_thread")

DU, DW = 2, 2


def setup(plugins, M=2, B=2, seed=0, **options):
    posterior = plugins.posteriors.get("mmvae-plus").configure(private_dim=DW, **options)
    torch.manual_seed(seed)
    mods = [LinearGaussian(f"x{i}", n, weight=w) for i, n, w in zip(range(M), (3, 2, 4), (1.5, 1.0, 0.5))]
    model = posterior.build_model(mods, DU).double()
    with torch.no_grad():
        for enc in [*model.encoders, *model.private_encoders]:  # experts that disagree
            enc.bias.normal_(0, 1.0)
        model.aux_logits.normal_(0, 0.5)  # auxiliary priors unlike the prior
    g = torch.Generator().manual_seed(seed + 7)
    xs = [torch.randn(B, *m.shape, generator=g, dtype=torch.float64) for m in mods]
    return posterior, model, xs


# ------------------------------------------------------------------ the formula, as loops
def laplace(z, loc, scale):
    return sum(-math.log(2) - torch.log(scale[i]) - (z[i] - loc[i]).abs() / scale[i] for i in range(len(z)))


def loop_log_weights(model, xs, draws, beta, s=None, detach_q=False):
    """log w_m^k [M, K, B] written out per stratum m, sample k and item b. ``s`` replaces the
    drawn [u, w_m] (default: rebuilt from the encoders and the recorded noise)."""
    eps, *aux_eps = draws
    K, M, B = eps.shape[0], len(xs), xs[0].shape[0]
    raw = [(enc(x), penc(x)) for enc, penc, x in zip(model.encoders, model.private_encoders, xs)]

    def expert(raw_out, dim):  # loc, softmax·D scale (MMVAE §4.1's Laplace posterior)
        loc, logits = raw_out[:, :dim], raw_out[:, dim:]
        return loc, torch.softmax(logits, -1) * dim + 1e-6

    shared = [expert(r[0], DU) for r in raw]
    private = [expert(r[1], DW) for r in raw]
    q = [((lu.detach(), su.detach()), (lw.detach(), sw.detach())) if detach_q else ((lu, su), (lw, sw))
         for (lu, su), (lw, sw) in zip(shared, private)]
    ones, zeros = torch.ones(DW, dtype=torch.float64), torch.zeros(DW, dtype=torch.float64)
    aux_scale = [model.aux_scale * torch.softmax(model.aux_logits[n], -1) * DW + 1e-6 for n in range(M)]
    out = torch.zeros(M, K, B, dtype=torch.float64)
    for m in range(M):
        for k in range(K):
            for b in range(B):
                if s is None:
                    u = shared[m][0][b] + shared[m][1][b] * eps[k, m, b, :DU]
                    w = private[m][0][b] + private[m][1][b] * eps[k, m, b, DU:]
                else:
                    u, w = s[m, k, b, :DU], s[m, k, b, DU:]
                value = 0.0
                for n in range(M):
                    if n == m:
                        w_n = w
                    else:  # drawn from r_n; stratum m is row m (or m − 1 past n) of r_n's draws
                        row = m if m < n else m - 1
                        w_n = aux_scale[n] * aux_eps[n].reshape(M - 1, K, B, DW)[row, k, b]
                    mean = model.decoders[n](torch.cat([u, w_n])[None])
                    value = value + model.weights[n] * model.modalities[n].log_likelihood(mean, xs[n][b:b + 1])[0]
                log_q_u = torch.logsumexp(torch.stack([laplace(u, q[j][0][0][b], q[j][0][1][b]) for j in range(M)]), 0) \
                    - math.log(M)
                log_p = laplace(u, zeros[:DU], ones[:DU]) + laplace(w, zeros, ones)
                out[m, k, b] = value + beta * (log_p - log_q_u - laplace(w, q[m][1][0][b], q[m][1][1][b]))
    return out


def loop_bound(log_w):
    """MMVAE Eq. 3 per item, averaged over items: (1/M) Σ_m [logsumexp_k log w − log K]."""
    M, K, B = log_w.shape
    total = 0.0
    for b in range(B):
        for m in range(M):
            total = total + (torch.logsumexp(log_w[m, :, b], 0) - math.log(K)) / M
    return total / B


@pytest.mark.parametrize("M", [2, 3])
def test_the_bound_matches_a_loop_transcription(plugins, M):
    posterior, model, xs = setup(plugins, M=M)
    result, autograd, draws = run_recorded(posterior, model, xs, 3, "iwae")
    assert len(draws) == 1 + M  # [u, w_m] for every stratum, then each auxiliary prior's
    value = loop_bound(loop_log_weights(model, xs, draws, beta=2.5))
    assert torch.allclose(result.bound, value.detach(), atol=1e-10)
    assert close(autograd, grads(model, -value))
    assert all(g.abs().sum() > 0 for g in autograd)  # every parameter is reached, r's logits too


def explicit_dreg(model, xs, draws, beta):
    """The DReG estimator computed explicitly: encoders Σ [(1−β)w̃ + βw̃²] ∂log w/∂s · ds/dφ,
    everything else Σ w̃ ∇ log w with s fixed; negative and scaled by 1/(M·B) as the loss."""
    eps = draws[0]
    K, M, B = eps.shape[0], len(xs), xs[0].shape[0]
    experts = model.experts(xs)
    s = torch.stack([torch.stack([torch.stack([
        torch.cat([experts[0][m].loc[b], experts[1][m].loc[b]]) + torch.cat([experts[0][m].scale[b], experts[1][m].scale[b]])
        * eps[k, m, b] for b in range(B)]) for k in range(K)]) for m in range(M)])  # [M, K, B, DU+DW]
    log_w = loop_log_weights(model, xs, draws, beta).detach()
    w = torch.softmax(log_w, dim=1)
    factor = (1 - beta) * w + beta * w**2
    enc = [p for nets in (model.encoders, model.private_encoders) for p in nets.parameters()]
    theta = [p for p in model.parameters() if all(p is not e for e in enc)]
    leaf = s.detach().requires_grad_()
    (d_s,) = torch.autograd.grad((factor * loop_log_weights(model, xs, draws, beta, s=leaf, detach_q=True)).sum(), leaf)
    g_enc = torch.autograd.grad(s, enc, grad_outputs=d_s)
    g_theta = torch.autograd.grad((w * loop_log_weights(model, xs, draws, beta, s=s.detach(), detach_q=True)).sum(),
                                  theta)
    by_id = {id(p): -g / (M * B) for p, g in zip(enc + theta, g_enc + g_theta)}
    return [by_id[id(p)] for p in model.parameters()], len(enc)


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_dreg_is_the_explicit_estimator(plugins, beta):
    posterior, model, xs = setup(plugins, M=2, beta=beta)
    assert posterior.estimators[0] == "dreg"
    result, autograd, draws = run_recorded(posterior, model, xs, 4, "dreg")
    explicit, n_enc = explicit_dreg(model, xs, draws, beta)
    order = [id(p) for p in model.parameters()]
    enc_ids = {id(p) for nets in (model.encoders, model.private_encoders) for p in nets.parameters()}
    is_enc = [i in enc_ids for i in order]
    assert sum(is_enc) == n_enc
    assert close(autograd, explicit)
    iwae, iwae_grads, _ = run_recorded(posterior, model, xs, 4, "iwae")
    assert torch.allclose(iwae.bound, result.bound)
    enc_pairs = [(a, b) for a, b, e in zip(autograd, iwae_grads, is_enc) if e]
    assert not close(*zip(*enc_pairs), tol=1e-6)  # DReG changes the encoders' estimator ...
    assert close([a for a, e in zip(autograd, is_enc) if not e], [b for b, e in zip(iwae_grads, is_enc) if not e])


def _mean_encoder_gradient(model, xs, beta, factor_beta, estimator, calls=40, K=3):
    """Mean and standard error, over independent calls, of the encoders' gradient of the loss
    (−the bound, or −the DReG surrogate with factor (1 − factor_beta) + factor_beta·w̃)."""
    enc = [p for nets in (model.encoders, model.private_encoders) for p in nets.parameters()]
    draws = []
    for seed in range(calls):
        torch.manual_seed(seed)
        log_w, s = log_weights(model, xs, K, beta, detach_q=estimator == "dreg")
        if estimator == "dreg":
            loss = -dreg_surrogate(log_w, s, (1,), beta=factor_beta).mean(0).mean()
        else:
            loss = -stratified_iwae(log_w).mean()
        draws.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, enc)]))
    draws = torch.stack(draws)
    return draws.mean(0), draws.std(0) / math.sqrt(calls)


def test_dreg_with_beta_is_unbiased_where_dreg_is_exact(plugins):
    """One modality (one expert: the sampling density is the one in the weights): DReG's mean
    gradient equals IWAE's. The β-blind factor w̃² differs from it by many standard errors."""
    posterior, model, xs = setup(plugins, M=1, B=1, beta=2.5)
    batch = [x.expand(500, *x.shape[1:]) for x in xs]  # one item, many independent draws
    iwae, iwae_se = _mean_encoder_gradient(model, batch, 2.5, 2.5, "iwae")
    dreg, dreg_se = _mean_encoder_gradient(model, batch, 2.5, 2.5, "dreg")
    blind, blind_se = _mean_encoder_gradient(model, batch, 2.5, 1.0, "dreg")
    z = (dreg - iwae).abs() / (dreg_se**2 + iwae_se**2).sqrt()
    assert z.max() < 4.5, z
    z_blind = (blind - iwae).abs() / (blind_se**2 + iwae_se**2).sqrt()
    assert z_blind.max() > 10, z_blind


# ------------------------------------------------------------------ the contract
def test_conforms_and_counts_m_squared_passes(plugins):
    posterior = plugins.posteriors.get("mmvae-plus").configure(private_dim=3)
    assert check_posterior(posterior) == {2: 4, 3: 9}
    for M in (2, 3):
        _, model, xs = setup(plugins, M=M, B=3)
        before = model.latents_decoded
        result = posterior.objective(model, xs, 5, "dreg")
        assert (model.latents_decoded - before) / (5 * 3) == result.decoder_passes == M * M


@torch.no_grad()
def test_the_latent_and_what_each_member_draws(plugins):
    _, model, xs = setup(plugins, M=3, B=4, aux_scale=0.01)
    D = DU + 3 * DW
    assert model.prior().mean.shape == (D,) and model.prior().rsample(5).shape == (5, D)
    # decoder d reads [u, w_d] only
    z = torch.randn(6, D, dtype=torch.float64)
    other = z.clone()
    other[:, model.private_block(2)] += 5.0
    assert torch.equal(model.decode(0, z), model.decode(0, other))
    assert not torch.equal(model.decode(2, z), model.decode(2, other))

    given = [xs[0], None, None]
    shared, private = model.experts(xs)
    q = model.condition(given, [0])
    draws = q.rsample(20_000)  # [n, B, D]
    assert torch.allclose(q.mean[:, :DU], shared[0].loc) and torch.allclose(q.mean[:, model.private_block(0)], private[0].loc)
    # unobserved private blocks: the prior Laplace(0, 1), whose E|w| is 1
    assert abs(draws[..., model.private_block(1)].abs().mean().item() - 1.0) < 0.02
    # log-density: the mixture's over u plus each block's own
    point = draws[:3]
    expected = shared[0].log_prob(point[..., :DU]) + private[0].log_prob(point[..., model.private_block(0)]) \
        + sum(model.private_prior(n).log_prob(point[..., model.private_block(n)]) for n in (1, 2))
    assert torch.allclose(q.log_prob(point), expected)
    # cross generation: unobserved private blocks from r_n (here narrow: scales summing to 0.01·D_w)
    cross = torch.stack([model.cross_latents(given, [0]) for _ in range(2000)])
    r1 = model.aux_prior(1).scale
    assert torch.allclose(cross[..., model.private_block(1)].abs().mean((0, 1)), r1, rtol=0.1)
    assert cross[..., model.private_block(1)].abs().max() < 0.5
    # the probe reads the shared block: the mixture mean of the observed experts
    rep = model.represent([xs[0], xs[1], None], [0, 1])
    assert torch.allclose(rep, (shared[0].loc + shared[1].loc) / 2) and rep.shape == (4, DU)


@torch.no_grad()
def test_cross_from_prior_draws_unobserved_private_latents_from_p(plugins):
    _, model, xs = setup(plugins, M=2, B=4, aux_scale=0.01, cross_from="prior")
    cross = torch.stack([model.cross_latents([xs[0], None], [0]) for _ in range(4000)])
    assert abs(cross[..., model.private_block(1)].abs().mean().item() - 1.0) < 0.05


@torch.no_grad()
def test_per_dimension_densities_of_the_block_posterior_sum_to_its_density(plugins):
    """The pictures' per-dimension KL reads a Concatenated posterior block by block."""
    _, model, xs = setup(plugins, M=2, B=3)
    q = model.condition([xs[0], None], [0])
    z = q.rsample(4)
    assert per_dim_log_prob(q, z).shape == (4, 3, DU + 2 * DW)
    assert torch.allclose(per_dim_log_prob(q, z)[..., DU:].sum(-1), q.log_prob(z) - q.parts[0].log_prob(z[..., :DU]))


def test_options_are_declared_and_checked(plugins):
    posterior = plugins.posteriors.get("mmvae-plus")
    assert posterior.option_values == {"private_dim": 32, "beta": 2.5, "aux_scale": 1.0, "learn_aux": True,
                                       "cross_from": "aux"}
    model = posterior.configure(learn_aux="false").build_model(setup(plugins)[1].modalities, 4)
    assert not model.aux_logits.requires_grad
    with pytest.raises(Exception, match="cross_from must be one of"):
        posterior.configure(cross_from="posterior")
