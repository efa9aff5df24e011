"""The model contract (mmbench.model) and the option declarations (mmbench.api.Option): block
latents, skipping what a model cannot give, and settings validated with a readable error."""

import pytest
import torch

from mmbench.api import MetricValue, Option, Posterior, Unsupported
from mmbench.distributions import Concatenated, DiagonalNormal, Factorised, SoftmaxLaplace
from mmbench.errors import MMBenchError
from mmbench.model import MultimodalVAE
from mmbench.plugins import get_plugins
from mmbench.runner import evaluate_metrics
from mmbench.testing import ToyDataset, tiny_context

PLUGINS = get_plugins()
pytestmark = pytest.mark.usefixtures("single_thread")


def _normal(loc, scale):
    return Factorised(DiagonalNormal(), torch.as_tensor(loc), torch.as_tensor(scale))


def test_concatenated_is_independent_blocks():
    shared = _normal(torch.randn(5, 3), torch.rand(5, 3) + 0.5)
    private = _normal(torch.zeros(5, 2), torch.ones(5, 2))  # e.g. a private block from its prior
    q = Concatenated([shared, private])
    assert q.mean.shape == (5, 5) and torch.equal(q.mean[:, 3:], torch.zeros(5, 2))
    z = q.rsample(4)
    assert z.shape == (4, 5, 5)
    expected = shared.log_prob(z[..., :3]) + private.log_prob(z[..., 3:])
    assert torch.allclose(q.log_prob(z), expected)
    # a diagonal Gaussian over all 5 dimensions is the same density
    whole = _normal(torch.cat([shared.loc, torch.zeros(5, 2)], -1), torch.cat([shared.scale, torch.ones(5, 2)], -1))
    assert torch.allclose(q.log_prob(z), whole.log_prob(z), atol=1e-5)


def test_build_model_is_the_generic_model_with_the_same_parameters():
    dataset = ToyDataset(3)
    for name in ("moe", "poe"):
        posterior = PLUGINS.posteriors.get(name)
        torch.manual_seed(0)
        built = posterior.build_model(dataset.modalities, 4)
        torch.manual_seed(0)
        direct = MultimodalVAE(dataset.modalities, 4, posterior.family)
        assert built.fusion is posterior and "fusion" not in dict(built.named_children())
        assert list(built.state_dict()) == list(direct.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))


class _NoDensity:
    """A posterior that can be sampled but has no density (e.g. an implicit one)."""

    def __init__(self, q):
        self.mean, self.rsample = q.mean, q.rsample


class _ImplicitModel(MultimodalVAE):
    def condition(self, xs, observed):
        return _NoDensity(super().condition(xs, observed))


class _Implicit(Posterior):
    name = "implicit"
    description = "a mixture whose density the model does not expose"
    family = SoftmaxLaplace()

    def __init__(self):
        self.base = PLUGINS.posteriors.get("moe")
        self.decoder_passes, self.objective = self.base.decoder_passes, self.base.objective
        self.estimators = self.base.estimators

    def condition(self, model, experts, observed):
        return self.base.condition(model, experts, observed)

    def build_model(self, modalities, latent_dim):
        return _ImplicitModel(modalities, latent_dim, self.family, fusion=self)


def test_a_metric_the_model_cannot_serve_is_skipped_with_its_reason():
    ctx = tiny_context(_Implicit(), ToyDataset(2))
    metrics = [PLUGINS.metrics.get("loglik").configure(samples=4, items=8),
               PLUGINS.metrics.get("coherence_cross").configure(items=32)]
    rows, skipped = evaluate_metrics(ctx, metrics)
    assert "has no density" in skipped["loglik"] and "implicit" in skipped["loglik"]
    assert not any(r["family"] == "loglik" for r in rows)
    assert any(r["family"] == "coherence_cross" for r in rows)  # the other metric still reports


def test_an_unsupported_member_says_why():
    model = MultimodalVAE(ToyDataset(2).modalities, 3, SoftmaxLaplace())  # built without a fusion rule
    with pytest.raises(Unsupported, match="fusion rule"):
        model.condition([torch.zeros(2, 3), None], [0])


def test_option_parses_and_checks_values():
    samples = Option("samples", 1000, "importance samples per estimate", low=1)
    assert samples.parse("5000") == 5000 and samples.kind is int
    beta = Option("beta", 1.0, "KL weight", low=0.0)
    assert beta.parse(2) == 2.0 and isinstance(beta.parse(2), float)
    assert Option("stratify", True, "").parse("no") is False
    with pytest.raises(MMBenchError, match=r"^likelihood.samples takes a positive integer \(got '0'\)"):
        samples.parse("0", owner="likelihood")
    with pytest.raises(MMBenchError, match="takes a positive integer .got 'many'"):
        samples.parse("many")
    with pytest.raises(MMBenchError, match=r"^beta must be in 0.0 \.\. \(got -1.0\)"):
        beta.parse("-1")
    assert Option("seeds", (0,), "", many=True).parse("3, 4") == [3, 4]
    with pytest.raises(MMBenchError, match="must be one of fp32, bf16"):
        Option("precision", "fp32", "", choices=("fp32", "bf16")).parse("fp16")
    with pytest.raises(MMBenchError, match="takes true or false"):
        Option("stratify", True, "").parse(1)


def test_configure_returns_a_validated_copy():
    class Weighted(Posterior):
        name = "weighted"
        options = (Option("alpha", 0.5, "weight of the unimodal terms", low=0.0, high=1.0),
                   Option("beta", 1.0, "KL weight", low=0.0))

    plain = Weighted()
    tuned = plain.configure(alpha="0.25")
    assert tuned.option_values == {"alpha": 0.25, "beta": 1.0}
    assert plain.option_values == {"alpha": 0.5, "beta": 1.0}  # the registered instance is untouched
    assert tuned.configure(beta=2).option_values == {"alpha": 0.25, "beta": 2.0}
    with pytest.raises(MMBenchError, match="'weighted' has no option 'alhpa'; did you mean 'alpha'"):
        plain.configure(alhpa=0.1)
    with pytest.raises(MMBenchError, match="weighted.alpha must be in 0.0 .. 1.0"):
        plain.configure(alpha=3)
    assert isinstance(MetricValue("x", 1.0), MetricValue)


@pytest.mark.parametrize("name", ["moe", "poe", "mmvae-plus"])
def test_reading_many_subsets_encodes_each_modality_once_and_changes_no_number(name):
    from itertools import combinations

    ctx = tiny_context(PLUGINS.posteriors.get(name), ToyDataset(4), epochs=0)
    rows = ctx.test_rows(300)
    xs = dict(enumerate(ctx.data.test.batch(rows, ctx.names)))
    subsets = [s for k in (1, 2, 3) for s in combinations(range(4), k)]
    encoders = getattr(ctx.model, "encoders", [])
    calls = []
    hooks = [e.register_forward_hook(lambda *_: calls.append(1)) for e in encoders]
    torch.manual_seed(7)
    together = ctx.read_subsets(xs, subsets, "cross_latents")
    read_together = len(calls)
    torch.manual_seed(7)
    one_by_one = [ctx.cross_latents({m: xs[m] for m in s}) for s in subsets]
    for hook in hooks:
        hook.remove()
    # the same draws in the same order: every subset's latents equal bit for bit
    assert all(torch.equal(a, b) for a, b in zip(together, one_by_one))
    means = ctx.read_subsets(xs, subsets, "represent")
    assert all(torch.equal(a, ctx.representations({m: xs[m] for m in s})) for a, s in zip(means, subsets))
    if name in ("moe", "poe"):  # the generic model: M encoder passes instead of one per subset member
        assert read_together == 4 and len(calls) - read_together == sum(len(s) for s in subsets)
