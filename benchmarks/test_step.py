"""One training step (forward + backward) of each posterior, mmbench's stacked implementation
against a naive per-expert Python loop of the same objective with the seed code's structure
(one decoder call per expert and decoder, the likelihood as torch.distributions writes it,
the default memory layout), side by side in one run, in fp32 and bf16, on two sets of
networks with synthetic tensors:

- ``mnist-svhn``: MMVAE's MNIST–SVHN architectures (Appendix F: MNIST MLP 784-400-D, SVHN conv
  32-64-128; D = 20), batch 128, K = 30 — the paper's setting;
- ``digits``: the default dataset's networks (grey MLP, colour conv encoder + MLP decoder,
  caption MLP), its defaults batch 128, K = 2.

Variants: ``loop-fp32`` (the baseline: the seed code's structure), ``stacked-fp32`` (the
whole batch in one pass, default layout), ``stacked-fp32-channels_last`` (the other fp32 layout,
nets with convolutions only), ``stacked-fp32-micro`` (as ``mmbench run`` trains on the CPU: the
step in item chunks of ``micro_batch`` auto, mmbench.step — the whole batch where the step is
small), ``loop-bf16``, ``stacked-bf16`` and ``stacked-bf16-micro`` (autocast, channels-last as
``mmbench run --precision bf16`` trains; where the processor has bf16 instructions). Before
timing, each fp32 stacked variant is checked to give the loop's bound and gradients on the
same samples. At the end the terminal summary prints every median and its speed-up over
``loop-fp32`` (benchmarks/conftest.py), with the load average before and after.

    pytest benchmarks/test_step.py --benchmark-only                # everything (~10 min quiet, 2 cores)
    pytest benchmarks/test_step.py --benchmark-only -k "moe and not tight"   # the headline

Environment: MMBENCH_BENCH_BATCH, MMBENCH_BENCH_K (both net sets), MMBENCH_BENCH_ROUNDS
(default 5), MMBENCH_BENCH_THREADS (torch threads; default torch's), MMBENCH_BENCH_OUT (also
write the summary there as markdown).

References: Shi et al., NeurIPS 2019 (MMVAE), Eq. 3, Eq. 5, Appendix B, Appendix C (DReG);
Wu & Goodman, NeurIPS 2018 (MVAE).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from step_summary import record_step
from mmbench.acceleration import autocast, cpu_bf16_support, to_channels_last
from mmbench.cost import synthetic_batch
from mmbench.distributions import laplace_log_prob, log_mean_exp, normal_kl
from mmbench.modalities import PIXEL_EPS, ImageModality, as_unit_interval
from mmbench.plugins import get_plugins
from mmbench.step import auto_micro_batch, backward_step

ROUNDS = int(os.environ.get("MMBENCH_BENCH_ROUNDS", 5))
LATENT = 20
CPU = torch.device("cpu")


def mnist_svhn_modalities():
    """Appendix F's networks; λ_MNIST = 3·32·32 / (28·28) as in the paper's code."""
    return [ImageModality("mnist", (1, 28, 28), arch="mlp", weight=3 * 32 * 32 / (28 * 28)),
            ImageModality("svhn", (3, 32, 32), arch="conv")]


def digits_modalities():
    return get_plugins().datasets.get("digits").modalities


NETS = {"mnist-svhn": (mnist_svhn_modalities, 128, 30), "digits": (digits_modalities, 128, 2)}


def size(nets: str) -> tuple[int, int]:
    _, batch, K = NETS[nets]
    return int(os.environ.get("MMBENCH_BENCH_BATCH", batch)), int(os.environ.get("MMBENCH_BENCH_K", K))


# ------------------------------------------------------------------ naive per-expert loops
def _log_likelihood(model, d, z, x):
    """log p_d(x | z) as the seed code computes an image's: clamp, then Laplace's log_prob
    (−log 2b − |x − loc| / b), summed; other modalities their own likelihood."""
    out = model.decode(d, z)
    modality = model.modalities[d]
    if not isinstance(modality, ImageModality):
        return modality.log_likelihood(out, x)
    loc = out.clamp(PIXEL_EPS, 1 - PIXEL_EPS)
    return laplace_log_prob(as_unit_interval(x), loc, modality.scale).sum(tuple(range(-len(modality.shape), 0)))


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
            log_p = log_p + model.weights[d] * _log_likelihood(model, d, z, x)
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
    weighted = [model.weights[j] * _log_likelihood(model, j, z, x) for j, (z, x) in enumerate(zip(zs, xs))]
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
        recon = sum(model.weights[d] * _log_likelihood(model, d, z, xs[d]) for d in subset)
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


def _same_objective(posterior, stacked_model, loop_model, xs, K, estimator):
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
        result = posterior.objective(stacked_model, xs, K, estimator)
        stacked = _grads(stacked_model, result.loss)
    finally:
        del posterior.family.rsample
    loss, bound = NAIVE[posterior.name](loop_model, xs, K, estimator=estimator, eps=draws[0])
    looped = _grads(loop_model, loss)
    assert torch.allclose(result.bound, bound, rtol=1e-4, atol=1e-2), (result.bound, bound)
    assert torch.allclose(result.loss, loss, rtol=1e-4, atol=1e-2), (result.loss, loss)
    assert len(stacked) == len(looped)
    for a, b in zip(stacked, looped):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item() + 1e-6)


VARIANTS = {  # name: (implementation, precision, channels-last)
    "loop-fp32": ("loop", "fp32", False),
    "stacked-fp32": ("stacked", "fp32", False),
    "stacked-fp32-channels_last": ("stacked", "fp32", True),
    "stacked-fp32-micro": ("micro", "fp32", False),
    "loop-bf16": ("loop", "bf16", False),
    "stacked-bf16": ("stacked", "bf16", True),
    "stacked-bf16-micro": ("micro", "bf16", True),
}


@pytest.fixture(scope="module", autouse=True)
def threads():
    before = torch.get_num_threads()
    if os.environ.get("MMBENCH_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["MMBENCH_BENCH_THREADS"]))
    yield
    torch.set_num_threads(before)


class Unavailable(Exception):
    """A variant that cannot run here (no bf16 instructions, no convolutions to lay out)."""


def build_step(nets: str, name: str, variant: str, check: bool = True):
    """One training step of ``name`` on ``nets`` as ``variant`` runs it: (a closure doing
    forward + backward, what it is). With ``check``, a stacked fp32 variant is first checked to
    give the loop's bound and gradients on the same samples. Raises Unavailable."""
    impl, precision, channels_last = VARIANTS[variant]
    if precision == "bf16" and cpu_bf16_support() is None:
        raise Unavailable("this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)")
    batch, K = size(nets)
    posterior = get_plugins().posteriors.get(name)
    torch.manual_seed(0)
    model = posterior.build_model(NETS[nets][0](), LATENT)
    if channels_last and not to_channels_last(model):
        raise Unavailable(f"the {nets} networks have no convolutions")
    reference = posterior.build_model(model.modalities, LATENT)  # the loop's plain model, same weights
    reference.load_state_dict(model.state_dict())
    xs = synthetic_batch(reference, batch)
    estimator = posterior.estimators[0]
    if check and impl != "loop" and precision == "fp32":
        # same samples, same bound, same gradients (checked on a small batch to keep it quick);
        # that item chunks add up to the batch's step is tests/test_step.py's
        _same_objective(posterior, model, reference, [x[:8] for x in xs], 4, estimator)
    micro_batch = auto_micro_batch(posterior, model, xs, K, estimator, precision) if impl == "micro" else None

    def step():
        model.zero_grad(set_to_none=True)
        if impl == "loop":
            with autocast(CPU, precision):
                loss = NAIVE[name](model, xs, K, estimator=estimator)[0]
            loss.backward()
        else:
            backward_step(posterior, model, xs, K, estimator, precision, micro_batch)

    info = dict(posterior=name, nets=nets, variant=variant, batch=batch, K=K, threads=torch.get_num_threads(),
                decoder_passes=posterior.decoder_passes(len(xs)), micro_batch=micro_batch)
    return step, info


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", ["moe", "moe-tight", "is-elbo", "poe"])
@pytest.mark.parametrize("nets", list(NETS))
def test_training_step(benchmark, nets, name, variant):
    try:
        step, info = build_step(nets, name, variant)
    except Unavailable as why:
        pytest.skip(str(why))
    benchmark.group = f"{name} step, {nets} nets, batch {info['batch']}, K {info['K']}"
    benchmark.extra_info.update(info)
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    if benchmark.stats is not None:
        record_step(f"{nets} (batch {info['batch']}, K {info['K']})", name, variant, benchmark.stats.stats.median)
