"""The fast paths of a training step against the plain fp32 one, on the same samples: the fused
image likelihood and the default layout give the plain numbers bit for bit; channels-last and
compiled networks give them to float tolerance; bf16 is chosen only where the processor has it
and is recorded in run.json and the leaderboard."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from mmbench import acceleration
from mmbench.acceleration import CompiledOrEager, compile_networks, resolve_precision, to_channels_last
from mmbench.distributions import clamped_laplace_log_prob, laplace_log_prob
from mmbench.errors import MMBenchError
from mmbench.model import unflatten_leading
from mmbench.modalities import PIXEL_EPS, ImageModality, TextModality, as_unit_interval

POSTERIORS = ("moe", "moe-tight", "is-elbo", "poe")
PLUGINS = str(Path(__file__).parent / "grid_plugins")


class PlainImage(ImageModality):
    """The image likelihood as first written: clamp, then the Laplace log-density, summed."""

    def log_likelihood(self, out, x):
        loc = out.clamp(PIXEL_EPS, 1 - PIXEL_EPS)
        return laplace_log_prob(as_unit_interval(x), loc, self.scale).sum(tuple(range(-len(self.shape), 0)))


def small_mnist_svhn(image=ImageModality):
    """MNIST–SVHN's kinds of network, small: an MLP image, a conv image, and a caption."""
    vocab = ["<pad>", "<eos>", "a", "b", "c"]
    return [image("grey", (1, 8, 8), hidden=16, weight=2.0),
            image("colour", (3, 8, 8), arch="conv", channels=(4, 8)),
            TextModality("caption", vocab, 4, embed=4, hidden=8)]


def one_step(posterior, model, xs, K=3):
    """(loss, bound, parameter gradients) of one step on the samples of seed 0."""
    torch.manual_seed(0)
    result = posterior.objective(model, xs, K, posterior.estimators[0])
    model.zero_grad(set_to_none=True)
    result.loss.backward()
    return result.loss.detach(), result.bound, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def plain_and_fast(posterior, modalities=3):
    """The same weights in a model with the plain likelihood and in mmbench's own, and a batch."""
    torch.manual_seed(1)
    fast = posterior.build_model(small_mnist_svhn()[:modalities], 4)
    plain = posterior.build_model(small_mnist_svhn(PlainImage)[:modalities], 4)
    plain.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(2)
    xs = [torch.rand(5, 1, 8, 8, generator=g), torch.rand(5, 3, 8, 8, generator=g),
          torch.randint(0, 5, (5, 4), generator=g)][:modalities]
    xs[0][:, :, :2] = 0.0  # black borders: the decoder's mean clamps there once it learns them
    return plain, fast, xs


def test_fused_image_likelihood_is_the_plain_one_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(2, 3, 4, 3, 8, 8, generator=g)
    flat = mean.view(-1)
    flat[:40], flat[40:80], flat[80:90], flat[90:100] = 0.0, 1.0, PIXEL_EPS, 1 - PIXEL_EPS  # clamped and at the bounds
    x = torch.rand(4, 3, 8, 8, generator=g)
    x.view(-1)[:30] = mean.view(-1)[:30]  # x == loc: the gradient of |x − loc| is 0 there
    a, b = mean.clone().requires_grad_(), mean.clone().requires_grad_()
    plain = laplace_log_prob(x, a.clamp(PIXEL_EPS, 1 - PIXEL_EPS), 0.75).sum((-3, -2, -1))
    fused = clamped_laplace_log_prob(x, b, 0.75, PIXEL_EPS, 1 - PIXEL_EPS, 3)
    weights = torch.randn(plain.shape, generator=g)
    plain.backward(weights)
    fused.backward(weights)
    assert torch.equal(plain, fused)
    assert torch.equal(a.grad, b.grad)
    assert (a.grad.view(-1)[:100] == 0).all()  # clamped pixels and bounds pass no gradient


def test_fused_image_likelihood_in_channels_last_agrees():
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(6, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
    x = torch.rand(6, 3, 8, 8, generator=g)
    ref = laplace_log_prob(x, mean.clamp(PIXEL_EPS, 1 - PIXEL_EPS), 0.75).sum((-3, -2, -1))
    assert torch.allclose(clamped_laplace_log_prob(x, mean, 0.75, PIXEL_EPS, 1 - PIXEL_EPS, 3), ref, rtol=1e-6)


def test_unflatten_leading_keeps_a_channels_last_output_without_a_copy():
    out = torch.randn(12, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    stacked = unflatten_leading(out, (3, 4))
    assert torch.equal(stacked, out.reshape(3, 4, 3, 5, 7))
    assert stacked.data_ptr() == out.data_ptr() and stacked.stride(-3) == 1
    transposed = torch.randn(7, 12).t()  # first dimension not outermost: reshape's copy
    assert torch.equal(unflatten_leading(transposed, (3, 4)), transposed.reshape(3, 4, 7))


@pytest.mark.parametrize("name", POSTERIORS)
def test_fp32_step_equals_the_plain_step_bit_for_bit(plugins, name):
    posterior = plugins.posteriors.get(name)
    plain, fast, xs = plain_and_fast(posterior)
    loss, bound, grads = one_step(posterior, plain, xs)
    loss_, bound_, grads_ = one_step(posterior, fast, xs)
    assert torch.equal(loss, loss_) and torch.equal(bound, bound_)
    assert grads.keys() == grads_.keys()
    for n in grads:
        assert torch.equal(grads[n], grads_[n]), n


def _close(plain_step, fast_step):
    """Float tolerance: log-weights of hundreds of nats carry ~1e-5 of absolute rounding, which
    the importance weights pass on to gradients relative to each gradient's largest entry."""
    (loss, bound, grads), (loss_, bound_, grads_) = plain_step, fast_step
    assert torch.allclose(loss, loss_, rtol=1e-5) and torch.allclose(bound, bound_, rtol=1e-5)
    assert grads.keys() == grads_.keys()
    for n in grads:
        scale = grads[n].abs().max().item()
        assert torch.allclose(grads[n], grads_[n], rtol=1e-3, atol=1e-4 * scale + 1e-7), n


@pytest.mark.parametrize("name", POSTERIORS)
def test_channels_last_step_equals_the_plain_step(plugins, name):
    posterior = plugins.posteriors.get(name)
    plain, fast, xs = plain_and_fast(posterior)
    assert to_channels_last(fast)
    assert fast.encoders[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    _close(one_step(posterior, plain, xs), one_step(posterior, fast, xs))


def test_compiled_networks_give_the_plain_step(plugins):
    """Dynamo captures each network and likelihood as it would for inductor (the eager backend
    then runs the captured graphs: no code generation, seconds instead of minutes)."""
    posterior = plugins.posteriors.get("moe")
    plain, fast, xs = plain_and_fast(posterior, modalities=2)  # the images: an MLP and a conv net
    assert compile_networks(fast, backend="eager") == 6  # 2 encoders, 2 decoders, 2 likelihoods
    _close(one_step(posterior, plain, xs), one_step(posterior, fast, xs))
    assert set(fast.state_dict()) == set(plain.state_dict())  # checkpoints unchanged


def _failing_backend(graph, example_inputs):
    raise RuntimeError("no C++ compiler here")


def test_a_failed_compile_falls_back_to_eager_with_one_warning(capsys):
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    x = torch.randn(4, 3)
    expected = net(x)
    net.forward = CompiledOrEager(net.forward, backend=_failing_backend)
    assert torch.equal(net(x), expected) and torch.equal(net(x), expected)
    assert capsys.readouterr().err.count("torch.compile failed") == 1


def test_an_error_of_the_function_itself_is_raised():
    def broken(x):
        return x @ torch.ones(5, 5)  # wrong shape for x

    wrapped = CompiledOrEager(broken, backend="eager")
    with pytest.raises(RuntimeError):
        wrapped(torch.ones(2, 3))


def test_precision_is_chosen_from_the_processor(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision(None, cpu) == "fp32" and resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(MMBenchError, match="no bf16 instructions"):
        resolve_precision("bf16", cpu)
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert resolve_precision("auto", cpu) == "bf16" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(MMBenchError, match="use one of fp32, bf16, auto"):
        resolve_precision("fp16", cpu)


def test_cpu_flags_are_read_from_proc_cpuinfo():
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    flags = acceleration.cpu_flags()
    assert flags and all(" " not in f for f in flags)
    assert acceleration.cpu_bf16_support() in (None, *acceleration.BF16_CPU_FLAGS)


needs_bf16 = pytest.mark.skipif(acceleration.cpu_bf16_support() is None,
                                reason="this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)")


@needs_bf16
@pytest.mark.parametrize("name", POSTERIORS)
def test_a_bf16_step_is_close_to_fp32(plugins, name):
    """Not the same math (bf16 networks), but the same bound to bf16's 3 significant digits,
    and densities still in fp32."""
    posterior = plugins.posteriors.get(name)
    plain, fast, xs = plain_and_fast(posterior)
    loss, bound, _ = one_step(posterior, plain, xs)
    to_channels_last(fast)
    with acceleration.autocast(torch.device("cpu"), "bf16"):
        torch.manual_seed(0)
        result = posterior.objective(fast, xs, 3, posterior.estimators[0])
    assert result.loss.dtype == torch.float32
    assert torch.allclose(result.bound, bound, rtol=2e-2)
    result.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters() if p.grad is not None)


# ------------------------------------------------------------------ recorded by a run
def mmbench(*args) -> tuple[int, str]:
    from mmbench.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["--plugins-dir", PLUGINS, *args])
    return rc, err.getvalue()


GRID = ["--dataset", "tiny-digits", "--posteriors", "moe", "--epochs", "1", "--metrics", "test_bound", "--quiet"]


def _board_footer(out) -> str:
    from mmbench.leaderboard import render, scan_runs

    paragraphs = render(scan_runs(out), "md", provenance=True).split("\n\n")
    return next(p for p in paragraphs if "finished runs of" in p)  # the provenance paragraph


def test_a_default_run_records_fp32_and_keeps_its_spec(tmp_path, mmbench_home, single_thread, monkeypatch):
    monkeypatch.setenv("MMBENCH_HOME", str(mmbench_home))
    rc, err = mmbench("run", *GRID, "--out", str(tmp_path))
    assert rc == 0, err
    info = json.loads((tmp_path / "tiny-digits/moe/seed-0/run.json").read_text())
    assert info["resolved_hparams"]["precision"] == "fp32" and info["resolved_hparams"]["compile"] is False
    assert "precision" not in info["spec"]["hparams"]  # a default run's directory stays what it was
    assert info["provenance"]["layout"] == "default"
    assert "fp32 training" in _board_footer(tmp_path)


@needs_bf16
def test_a_bf16_run_records_bf16(tmp_path, mmbench_home, single_thread, monkeypatch):
    monkeypatch.setenv("MMBENCH_HOME", str(mmbench_home))
    rc, err = mmbench("run", *GRID, "--precision", "bf16", "--out", str(tmp_path))
    assert rc == 0, err
    info = json.loads((tmp_path / "tiny-digits/moe/seed-0/run.json").read_text())
    assert info["spec"]["hparams"]["precision"] == "bf16" and info["resolved_hparams"]["precision"] == "bf16"
    assert "bf16 training" in _board_footer(tmp_path)


def test_layout_channels_last_is_asked_for_and_recorded(tmp_path, mmbench_home, single_thread, monkeypatch):
    from mmbench.acceleration import channels_last_pays

    assert not channels_last_pays("fp32") and channels_last_pays("bf16")  # auto: with bf16 only
    assert channels_last_pays("fp32", "channels_last") and not channels_last_pays("bf16", "default")
    monkeypatch.setenv("MMBENCH_HOME", str(mmbench_home))
    rc, err = mmbench("run", *GRID, "--layout", "channels_last", "--out", str(tmp_path))
    assert rc == 0, err
    info = json.loads((tmp_path / "tiny-digits/moe/seed-0/run.json").read_text())
    assert info["spec"]["hparams"]["layout"] == "channels_last"
    assert info["provenance"]["layout"] == "default"  # tiny-digits has no convolution to lay out


def test_prepare_model_lays_out_convolutions_as_asked(plugins):
    from mmbench.acceleration import prepare_model

    model = plugins.posteriors.get("moe").build_model(plugins.datasets.get("digits").modalities, 20)
    convolutions = [p for p in model.parameters() if p.dim() == 4]
    assert convolutions and prepare_model(model, "fp32")["layout"] == "default"
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convolutions)
    assert prepare_model(model, "fp32", layout="channels_last")["layout"] == "channels_last"
    convolutions = [p for p in model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convolutions)


def test_an_unknown_layout_is_one_line_before_any_run(tmp_path):
    rc, err = mmbench("run", *GRID, "--layout", "nhwc", "--out", str(tmp_path))
    assert rc == 2 and err.strip() == ("mmbench: error: --layout: layout must be one of auto, default, "
                                       "channels_last (got 'nhwc')")
    assert not any(tmp_path.iterdir())


def test_an_unknown_precision_is_one_line_before_any_run(tmp_path):
    rc, err = mmbench("run", *GRID, "--precision", "fp16", "--out", str(tmp_path))
    assert rc == 2 and err.strip() == "mmbench: error: --precision: precision must be one of fp32, bf16, auto (got 'fp16')"
    assert not any(tmp_path.iterdir())
