"""A training step in item chunks (mmbench.step) is the whole batch's step: same bound, same
gradients, for every standard posterior that declares ``items_independent``; a coupled objective
is not; auto chunks only where the step's saved activations outgrow the budget, never below its
smallest chunk, never a model with batch normalisation or a posterior that does not declare it;
a run records its chunking and resumes with it; bad requests are one line with nothing made."""

import json

import pytest
import torch

from mmbench import step
from mmbench.api import Posterior
from mmbench.errors import MMBenchError
from mmbench.modalities import ImageModality
from mmbench.step import (MIN_CHUNK_ITEMS, SAVED_BYTES_BUDGET, SPLIT_FROM_BYTES, auto_micro_batch, backward_step,
                          chunk_sizes, require_splittable, saved_bytes_per_item)
from mmbench.testing import ToyDataset

from conftest import run_with_grid_plugins as mmbench

SPLITTABLE = ["moe", "moe-tight", "is-elbo", "poe", "mvtcae", "jmvae", "mmvae-plus"]
#: their draws are stratified over the batch's positions (mmjsd: expert (b + k) mod M for item b)
NOT_SPLITTABLE = ["mmjsd"]


def per_item_draws(family):
    """The family's rsample made a function of each item's own parameters and the sample index,
    so an item gets the same draws wherever it sits in a batch or a chunk."""

    def rsample(loc, scale, n):
        k = torch.arange(1, n + 1, dtype=loc.dtype).view(n, *[1] * loc.dim())
        return loc + scale * torch.sin(7.31 * k + 113.0 * loc.detach() + 5.0 * scale.detach())

    family.rsample = rsample  # an instance attribute: the class's method stays as it is


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def svhn_like_moe(plugins, batch: int):
    """moe on MMVAE's MNIST–SVHN networks (the SVHN decoder keeps MiBs an item at K = 30)."""
    moe = plugins.posteriors.get("moe")
    modalities = [ImageModality("grey", (1, 28, 28), arch="mlp"), ImageModality("colour", (3, 32, 32), arch="conv")]
    return moe, moe.build_model(modalities, 20), [torch.rand(batch, 1, 28, 28), torch.rand(batch, 3, 32, 32)]


def whole_and_chunked(posterior, model, xs, K, micros):
    """{micro_batch: (bound sum, passes, gradients)} of one step each, whole (None) and chunked,
    on draws that depend only on the item."""
    per_item_draws(posterior.family)
    results = {}
    try:
        for micro in (None, *micros):
            model.zero_grad(set_to_none=True)
            bound_sum, passes = backward_step(posterior, model, xs, K, posterior.estimators[0], micro_batch=micro)
            results[micro] = (bound_sum, passes, grads(model))
    finally:
        del posterior.family.rsample
    return results


def same_step(a, b) -> bool:
    return (a[1] == b[1] and torch.allclose(a[0], b[0], rtol=1e-5, atol=1e-3) and a[2].keys() == b[2].keys()
            and all(torch.allclose(a[2][k], g, rtol=1e-4, atol=1e-4 * g.abs().max().item() + 1e-7)
                    for k, g in b[2].items()))


def test_chunk_sizes_cover_the_batch_evenly():
    for batch, micro in [(128, 8), (128, 48), (7, 3), (5, 5), (5, 9), (1, 1)]:
        sizes = chunk_sizes(batch, micro)
        assert sum(sizes) == batch and max(sizes) <= micro and max(sizes) - min(sizes) <= 1
        assert len(sizes) == -(-batch // micro)


@pytest.mark.parametrize("M", [2, 3])
@pytest.mark.parametrize("name", SPLITTABLE)
def test_a_step_in_item_chunks_is_the_whole_batch_step(plugins, name, M):
    posterior = plugins.posteriors.get(name)
    assert posterior.items_independent
    torch.manual_seed(0)
    model = posterior.build_model(ToyDataset(M).modalities, 4)
    xs = ToyDataset(M).load().train.batch(torch.arange(4 * M), model.names)
    results = whole_and_chunked(posterior, model, xs, 3, (M, 2 * M, M + 1))  # M + 1: uneven chunks
    whole = results[None]
    assert whole[2] and all(g.abs().sum() > 0 for g in whole[2].values())
    for micro in (M, 2 * M, M + 1):
        assert same_step(results[micro], whole), (name, micro)


def test_a_coupled_objective_in_chunks_is_another_step(plugins):
    """The check above can fail: an objective whose loss is not a mean of per-item terms (here
    the square of moe's mean) gives other gradients when the same items are split."""
    moe = plugins.posteriors.get("moe")

    class Squared(type(moe)):
        def objective(self, model, xs, K, estimator):
            result = super().objective(model, xs, K, estimator)
            result.loss = result.loss ** 2 / 1000
            return result

    model = moe.build_model(ToyDataset(2).modalities, 4)
    xs = ToyDataset(2).load().train.batch(torch.arange(8), model.names)
    coupled = whole_and_chunked(Squared(), model, xs, 3, (4,))
    assert not same_step(coupled[4], coupled[None])
    plain = whole_and_chunked(moe, model, xs, 3, (4,))
    assert same_step(plain[4], plain[None])


@pytest.mark.parametrize("name", NOT_SPLITTABLE)
def test_a_posterior_with_batch_wide_strata_is_not_split(plugins, name):
    posterior = plugins.posteriors.get(name)
    assert not posterior.items_independent
    _, model, xs = svhn_like_moe(plugins, 32)
    assert auto_micro_batch(posterior, posterior.build_model(model.modalities, 20), xs, 30, "reparam") == 32
    with pytest.raises(MMBenchError, match=f"'{name}' does not declare"):
        require_splittable(posterior)


def test_batch_normalisation_is_never_split(plugins):
    moe, model, xs = svhn_like_moe(plugins, 32)
    assert auto_micro_batch(moe, model, xs, 30, "dreg") < 32
    model.decoders[0].insert(1, torch.nn.BatchNorm1d(400))  # normalises over the batch's latents
    assert auto_micro_batch(moe, model, xs, 30, "dreg") == 32
    with pytest.raises(MMBenchError, match="normalise over the batch .BatchNorm1d."):
        backward_step(moe, model, xs, 1, "dreg", micro_batch=8)


def test_saved_bytes_grow_with_items_and_leave_the_rng_alone(plugins):
    posterior = plugins.posteriors.get("moe")
    model = posterior.build_model(ToyDataset(2).modalities, 4)
    xs = ToyDataset(2).load().train.batch(torch.arange(8), model.names)
    state = torch.random.get_rng_state()
    decoded = model.latents_decoded
    small = saved_bytes_per_item(posterior, model, xs, 2, "dreg")
    large = saved_bytes_per_item(posterior, model, xs, 8, "dreg")
    assert torch.equal(torch.random.get_rng_state(), state) and model.latents_decoded == decoded
    # 2 modalities of 8×8 pixels decoded from M·K latents per item, fp32: at least the outputs
    assert small >= 2 * 2 * 2 * 64 * 4 and large > 3 * small
    assert model.training and all(p.grad is None for p in model.parameters())


def test_auto_chunks_a_large_step_and_keeps_a_small_one_whole(plugins, monkeypatch):
    posterior, model, xs = svhn_like_moe(plugins, 32)
    per_item = saved_bytes_per_item(posterior, model, xs, 30, "dreg")
    assert 32 * per_item > SPLIT_FROM_BYTES  # MMVAE's SVHN decoder at K = 30 keeps MiBs an item
    micro = auto_micro_batch(posterior, model, xs, 30, "dreg")
    chunks = int(32 * per_item // SAVED_BYTES_BUDGET)
    assert micro == -(-32 // chunks) and len(chunk_sizes(32, micro)) <= chunks and micro < 32
    assert auto_micro_batch(posterior, model, [x[:16] for x in xs], 30, "dreg") == 16  # 70 MiB: whole
    assert auto_micro_batch(posterior, model, [x[:8] for x in xs], 1, "dreg") == 8  # K = 1: whole
    assert 8 * saved_bytes_per_item(posterior, model, xs, 1, "dreg") < SPLIT_FROM_BYTES
    # however much an item keeps, chunks are not smaller than MIN_CHUNK_ITEMS
    monkeypatch.setattr(step, "SAVED_BYTES_BUDGET", 2**16)
    monkeypatch.setattr(step, "SPLIT_FROM_BYTES", 2**18)
    assert auto_micro_batch(posterior, model, xs, 30, "dreg") == MIN_CHUNK_ITEMS


def test_an_objective_that_needs_many_items_is_trained_whole(plugins):
    """The probe runs the objective on 2 and 4 items; one that refuses so few is not split
    (and its training step, on whole batches, behaves as before)."""
    moe = plugins.posteriors.get("moe")

    class NeedsEight(type(moe)):
        def objective(self, model, xs, K, estimator):
            if xs[0].shape[0] < 8:
                raise ValueError("needs at least 8 items")
            return super().objective(model, xs, K, estimator)

    _, model, xs = svhn_like_moe(plugins, 32)
    assert auto_micro_batch(moe, model, xs, 30, "dreg") < 32  # the same step of moe itself is split
    assert auto_micro_batch(NeedsEight(), model, xs, 30, "dreg") == 32


def test_a_posterior_that_does_not_declare_it_is_not_split():
    class Coupled(Posterior):
        name = "coupled"

    require_splittable(type("Fine", (Posterior,), {"name": "fine", "items_independent": True})())
    with pytest.raises(MMBenchError, match="'coupled' does not declare its objective a mean over items"):
        require_splittable(Coupled())
    assert auto_micro_batch(Coupled(), None, [torch.zeros(64, 3)], 30, "reparam") == 64  # never probed


def _metrics(run_dir):
    """metrics.jsonl's rows without wall times (they differ between any two runs)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["metric"] not in ("train_s", "step_ms")]


def test_a_run_records_its_chunking_and_resumes_with_it(tmp_path, mmbench_home, monkeypatch):
    """A grid asked for chunks of 16 records them in run.json, its checkpoint and the leaderboard;
    a checkpoint from before chunks existed resumes on whole batches (not set aside) and ends
    with the numbers of the uninterrupted run, or goes on in the chunks asked for, saying so; a
    bad value or a posterior that cannot be split is one line with nothing made."""
    monkeypatch.setenv("MMBENCH_HOME", str(mmbench_home))
    grid = ["--dataset", "tiny-digits", "--posteriors", "moe", "--metrics", "test_bound", "--quiet"]
    out = tmp_path / "runs"
    for bad, says in ((["--micro-batch", "0"], "micro_batch"), (["--posteriors", "test-coupled", "--micro-batch", "8"],
                                                                "does not declare its objective a mean over items")):
        rc, _, stderr = mmbench("run", *grid, "--epochs", "2", *bad, "--out", str(out))
        assert rc == 2 and says in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not out.exists()
    rc, _, stderr = mmbench("run", *grid, "--epochs", "2", "--micro-batch", "16", "--out", str(out))
    assert rc == 0, stderr
    run_dir = out / "tiny-digits" / "moe" / "seed-0"
    assert json.loads((run_dir / "run.json").read_text())["resolved_hparams"]["micro_batch"] == 16
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["config"]["micro_batch"] == 16
    rc, board, _ = mmbench("leaderboard", str(out), "--provenance")
    assert rc == 0 and "Steps in item chunks of at most 16 items (1 of 1 runs)." in board

    whole = tmp_path / "whole"
    rc, _, stderr = mmbench("run", *grid, "--epochs", "2", "--out", str(whole))  # auto: tiny steps stay whole
    assert rc == 0, stderr
    run_dir = whole / "tiny-digits" / "moe" / "seed-0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["resolved_hparams"]["micro_batch"] == info["resolved_hparams"]["batch_size"]
    finished = _metrics(run_dir)
    rc, board, _ = mmbench("leaderboard", str(whole), "--provenance")
    assert rc == 0 and "item chunks" not in board
    # the checkpoint of a first epoch, as written before there were chunks
    first = tmp_path / "first"
    rc, _, stderr = mmbench("run", *grid, "--epochs", "1", "--out", str(first))
    assert rc == 0, stderr
    old = torch.load(first / "tiny-digits" / "moe" / "seed-0" / "checkpoint.pt", weights_only=True)
    del old["config"]["micro_batch"]
    old["config"]["epochs"] = 2
    for extra, says in (([], None), (["--micro-batch", "16"], "began in chunks of 128 items and goes on in chunks of 16")):
        torch.save(old, run_dir / "checkpoint.pt")
        (run_dir / "metrics.jsonl").unlink()
        (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
        rc, _, stderr = mmbench("run", *grid, "--epochs", "2", *extra, "--out", str(whole))
        assert rc == 0, stderr
        assert "from epoch 1 of 2" in stderr and "other settings" not in stderr
        resolved = json.loads((run_dir / "run.json").read_text())["resolved_hparams"]["micro_batch"]
        if says is None:  # auto: whole batches, as the run began, and the uninterrupted run's numbers
            assert resolved == 128 and _metrics(run_dir) == finished
        else:
            assert says in stderr and resolved == 16
