"""mmbench cost: counts and shapes only (timings live in benchmarks/)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from mmbench import cost
from mmbench.cost_command import parse_range
from mmbench.errors import MMBenchError
from mmbench.modalities import ImageModality, TextModality
from mmbench.model import MultimodalVAE

POSTERIORS = ("moe", "moe-tight", "is-elbo", "poe")
#: the step checks also cover models with networks of their own (private latents, a joint encoder)
STEPPED = POSTERIORS + ("mmvae-plus", "jmvae")


class TinyMModalities:
    """A dataset stand-in that takes a modality count, as `mmbench cost` asks of a dataset."""

    name = "tiny"
    defaults = {"latent_dim": 4}

    def __init__(self, M=2):
        self.modalities = [ImageModality(f"m{i}", (1, 6, 6), hidden=8) for i in range(M)]

    def configure(self, modalities=None, **_):
        return TinyMModalities(modalities or 2)


def test_growth_exponent_recovers_a_power_law():
    assert cost.growth_exponent([2, 3, 5, 8], [3 * m**2 for m in (2, 3, 5, 8)]) == pytest.approx(2.0)
    assert cost.growth_exponent([1, 10], [7, 70]) == pytest.approx(1.0)


def test_counted_passes_grow_as_declared(plugins):
    posteriors = [plugins.posteriors.get(n) for n in POSTERIORS]
    cells = cost.run_grid(TinyMModalities(), posteriors, modalities=[2, 3, 4], K=2, batch=3, latent_dim=4,
                          device=torch.device("cpu"), Ks=[1, 3], batches=[2], repeats=1, warmup=0, gemm=1e9)
    assert len(cells) == len(POSTERIORS) * (3 + 2 + 1)
    for c in cells:
        assert c.passes_counted == c.passes_declared
        assert c.median_ms > 0 and c.gflop > 0 and c.repeats == 1
        assert 0 < c.decoder_flop_share < 1 and c.load1 >= 0
    by = {(c.posterior, c.sweep, c.M, c.K, c.batch): c for c in cells}
    assert by["moe", "M", 4, 2, 3].passes_counted == 16 and by["is-elbo", "M", 4, 2, 3].passes_counted == 4
    assert by["poe", "M", 4, 2, 3].passes_counted == 8
    fits = {(r["posterior"], r["against"]): r for r in cost.exponents(cells)}
    assert fits["moe", "M"]["passes_exponent"] == pytest.approx(2.0)
    assert fits["moe-tight", "M"]["declared_exponent"] == pytest.approx(2.0)
    assert fits["is-elbo", "M"]["passes_exponent"] == pytest.approx(1.0)
    assert ("moe", "K") in fits and ("moe", "batch") not in fits  # one batch size: nothing to fit
    # FLOPs grow with the decoder work: moe at M=4 does more than is-elbo at M=4, and more of
    # it in the decoders; the decoders' FLOPs are exactly passes × K·B latents × per latent.
    moe, is_elbo = by["moe", "M", 4, 2, 3], by["is-elbo", "M", 4, 2, 3]
    assert moe.gflop > is_elbo.gflop and moe.decoder_flop_share > is_elbo.decoder_flop_share
    assert moe.gflop * moe.decoder_flop_share == pytest.approx(4 * is_elbo.gflop * is_elbo.decoder_flop_share)
    table = cost.cells_table(cells)
    assert table.count("\n") == len(cells) + 1


def test_every_registered_posterior_is_measured(plugins):
    """`mmbench cost` with no --posteriors measures every one: models whose decoders take more
    than the shared latent (mmvae-plus: shared + private) are counted from what they are fed."""
    posteriors = [plugins.posteriors.get(n) for n in plugins.posteriors.names()]
    cells = cost.run_grid(TinyMModalities(), posteriors, modalities=[2], K=1, batch=2, latent_dim=4,
                          device=torch.device("cpu"), Ks=[], batches=[], repeats=1, warmup=0, gemm=1e9)
    assert {c.posterior for c in cells} == set(plugins.posteriors.names())
    assert all(c.gflop > 0 and 0 < c.decoder_flop_share < 1 for c in cells)


def test_plot_is_a_png(tmp_path, plugins):
    cells = cost.run_grid(TinyMModalities(), [plugins.posteriors.get("moe")], modalities=[2, 3], K=1, batch=2,
                          latent_dim=4, device=torch.device("cpu"), repeats=1, warmup=0)
    cost.plot(cells, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_synthetic_batch_has_the_data_shapes_and_types():
    mods = [ImageModality("img", (3, 8, 8), arch="conv", channels=(4, 8)),
            TextModality("txt", ["<pad>", "<eos>", "a", "b"], max_len=5)]
    model = MultimodalVAE(mods, 3, plugins_family())
    img, txt = cost.synthetic_batch(model, 7)
    assert img.shape == (7, 3, 8, 8) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert txt.shape == (7, 5) and txt.dtype == torch.int64 and int(txt.max()) < 4


def plugins_family():
    from mmbench.distributions import SoftmaxLaplace

    return SoftmaxLaplace()


@pytest.mark.parametrize("name", STEPPED)
def test_a_step_reads_nothing_back_from_the_device(plugins, name):
    """On the meta device any op that needs a value on the host (.item(), nonzero, a
    data-dependent shape) raises: a step that runs there queues work without syncing."""
    posterior = plugins.posteriors.get(name)
    mods = [ImageModality("a", (1, 6, 6), hidden=8), ImageModality("b", (3, 8, 8), arch="conv", channels=(4, 8))]
    model = posterior.build_model(mods, 4).to("meta")
    xs = [torch.rand(3, *m.shape, device="meta") for m in mods]
    result = posterior.objective(model, xs, 2, posterior.estimators[0])
    result.loss.backward()
    assert result.decoder_passes == posterior.decoder_passes(2)


def test_parse_range():
    assert parse_range("2..5") == [2, 3, 4, 5]
    assert parse_range("2,4,8") == [2, 4, 8]
    for bad in ("x", "5..2", "0,1", ""):
        with pytest.raises(MMBenchError):
            parse_range(bad)


def test_cost_cli_end_to_end(tmp_path):
    out = tmp_path / "cost"
    proc = run_cli("cost", "--modalities", "2..3", "--posteriors", "moe,is-elbo", "--K", "1", "--batch-size", "2",
                   "--repeats", "1", "--warmup", "0", "--Ks", "1,2", "--threads", "1", "--gemm-size", "128",
                   "--device", "cpu", "--layout", "channels_last", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "cost.json").read_text())
    counted = {(c["posterior"], c["sweep"], c["M"], c["K"]): c["passes_counted"] for c in data["cells"]}
    assert counted["moe", "M", 3, 1] == 9 and counted["is-elbo", "M", 3, 1] == 3
    assert len(data["cells"]) == 2 * (2 + 2) and data["machine"]["precision"] == "fp32"
    report = (out / "cost.md").read_text()
    assert (out / "cost.png").stat().st_size > 0 and "| moe | M | 3 |" in report
    assert "load average (1/5/15 min)" in report and "mmbench cost --modalities 2..3" in report
    assert data["machine"]["layout"] == "channels_last" and "fp32, channels-last convolutions" in report
    assert len(data["machine"]["load_average"]["before"]) == 3 and data["machine"]["gemm_gflops_after"] > 0


@pytest.mark.parametrize("args", [["--modalities", "two"], ["--dataset", "digits"], ["--layout", "nhwc"]])
def test_cost_cli_bad_input_is_one_line(tmp_path, args):
    proc = run_cli("cost", *args, "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "error" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", STEPPED)
def test_a_bf16_autocast_step_keeps_the_latent_arithmetic_in_fp32(plugins, name):
    """Autocast runs the networks in bf16; densities, weights and DReG's hook stay fp32."""
    posterior = plugins.posteriors.get(name)
    torch.manual_seed(0)
    model = posterior.build_model(TinyMModalities(3).modalities, 4)
    xs = cost.synthetic_batch(model, 5)
    torch.manual_seed(1)
    reference = posterior.objective(model, xs, 3, posterior.estimators[0]).bound
    torch.manual_seed(1)
    step = cost.make_step(posterior, model, xs, 3, posterior.estimators[0], precision="bf16")
    result = step()
    assert result.loss.dtype == torch.float32 and torch.isfinite(result.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert abs(result.bound.item() - reference.item()) < 0.02 * abs(reference.item()) + 1.0
