"""A training step in item chunks (mmbench.step) is the whole batch's step: same bound, same
gradients, for every standard posterior that declares ``items_independent``; auto chunks only
where the step's saved activations outgrow the budget; a run records its chunking and resumes
with it; a posterior that does not declare it is refused before anything is made."""

import json

import pytest
import torch

from mmbench.api import Posterior
from mmbench.errors import MMBenchError
from mmbench.modalities import ImageModality
from mmbench.step import (SAVED_BYTES_BUDGET, SPLIT_FROM_BYTES, auto_micro_batch, backward_step, chunk_sizes, require_splittable,
                          saved_bytes_per_item)
from mmbench.testing import ToyDataset

from conftest import run_with_grid_plugins as mmbench

# mmjsd strata and every other draw below depend only on the item and, for mmjsd, on its
# position modulo M: chunks of a multiple of M keep every item's draws
SPLITTABLE = ["moe", "moe-tight", "is-elbo", "poe", "mmjsd", "mvtcae", "jmvae", "mmvae-plus"]


def per_item_draws(family):
    """The family's rsample made a function of each item's own parameters and the sample index,
    so an item gets the same draws wherever it sits in a batch or a chunk."""

    def rsample(loc, scale, n):
        k = torch.arange(1, n + 1, dtype=loc.dtype).view(n, *[1] * loc.dim())
        return loc + scale * torch.sin(7.31 * k + 113.0 * loc.detach() + 5.0 * scale.detach())

    family.rsample = rsample  # an instance attribute: the class's method stays as it is


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


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
    data = ToyDataset(M).load()
    torch.manual_seed(0)
    model = posterior.build_model(ToyDataset(M).modalities, 4)
    xs = data.train.batch(torch.arange(4 * M), model.names)
    per_item_draws(posterior.family)
    try:
        results = {}
        for micro in (None, M, 2 * M):  # whole; chunks of M items; two halves
            model.zero_grad(set_to_none=True)
            bound_sum, passes = backward_step(posterior, model, xs, 3, posterior.estimators[0], micro_batch=micro)
            results[micro] = (bound_sum, passes, grads(model))
    finally:
        del posterior.family.rsample
    whole_bound, whole_passes, whole = results[None]
    assert whole and all(g.abs().sum() > 0 for g in whole.values())
    for micro in (M, 2 * M):
        bound, passes, chunked = results[micro]
        assert passes == whole_passes
        assert torch.allclose(bound, whole_bound, rtol=1e-5, atol=1e-3), (micro, bound, whole_bound)
        assert chunked.keys() == whole.keys()
        for key, g in whole.items():
            assert torch.allclose(chunked[key], g, rtol=1e-4, atol=1e-4 * g.abs().max().item() + 1e-7), (micro, key)


def test_a_step_split_at_the_wrong_items_differs(plugins):
    """The check above can fail: a chunked step whose loss is not scaled by the chunk's share
    (a plain sum of chunk means) gives other gradients."""
    posterior = plugins.posteriors.get("moe")
    model = posterior.build_model(ToyDataset(2).modalities, 4)
    xs = ToyDataset(2).load().train.batch(torch.arange(8), model.names)
    per_item_draws(posterior.family)
    try:
        backward_step(posterior, model, xs, 3, "dreg")
        whole = grads(model)
        model.zero_grad(set_to_none=True)
        for half in (slice(0, 4), slice(4, 8)):
            posterior.objective(model, [x[half] for x in xs], 3, "dreg").loss.backward()
    finally:
        del posterior.family.rsample
    assert not all(torch.allclose(grads(model)[k], g) for k, g in whole.items())


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


def test_auto_chunks_a_large_step_and_keeps_a_small_one_whole(plugins):
    posterior = plugins.posteriors.get("moe")
    svhn_like = [ImageModality("grey", (1, 28, 28), arch="mlp"), ImageModality("colour", (3, 32, 32), arch="conv")]
    model = posterior.build_model(svhn_like, 20)
    xs = [torch.rand(32, 1, 28, 28), torch.rand(32, 3, 32, 32)]
    per_item = saved_bytes_per_item(posterior, model, xs, 30, "dreg")
    assert 32 * per_item > SPLIT_FROM_BYTES  # MMVAE's SVHN decoder at K = 30 keeps MiBs an item
    micro = auto_micro_batch(posterior, model, xs, 30, "dreg")
    chunks = int(32 * per_item // SAVED_BYTES_BUDGET)
    assert micro == -(-32 // chunks) and len(chunk_sizes(32, micro)) <= chunks and micro < 32
    assert auto_micro_batch(posterior, model, [x[:16] for x in xs], 30, "dreg") == 16  # 70 MiB: whole
    assert auto_micro_batch(posterior, model, [x[:8] for x in xs], 1, "dreg") == 8  # K = 1: whole
    assert 8 * saved_bytes_per_item(posterior, model, xs, 1, "dreg") < SPLIT_FROM_BYTES


def test_an_objective_that_needs_many_items_is_trained_whole(plugins):
    """The probe runs the objective on 2 and 4 items; one that refuses so few is not split
    (and its training step, on whole batches, behaves as before)."""
    moe = plugins.posteriors.get("moe")

    class NeedsEight(type(moe)):
        def objective(self, model, xs, K, estimator):
            if xs[0].shape[0] < 8:
                raise ValueError("needs at least 8 items")
            return super().objective(model, xs, K, estimator)

    svhn_like = [ImageModality("grey", (1, 28, 28), arch="mlp"), ImageModality("colour", (3, 32, 32), arch="conv")]
    model = moe.build_model(svhn_like, 20)
    xs = [torch.rand(32, 1, 28, 28), torch.rand(32, 3, 32, 32)]
    assert auto_micro_batch(moe, model, xs, 30, "dreg") < 32  # the same step of moe itself is split
    assert auto_micro_batch(NeedsEight(), model, xs, 30, "dreg") == 32


def test_a_posterior_that_does_not_declare_it_is_not_split():
    class Coupled(Posterior):
        name = "coupled"

    require_splittable(type("Fine", (Posterior,), {"name": "fine", "items_independent": True})())
    with pytest.raises(MMBenchError, match="'coupled' does not declare its objective a mean over items"):
        require_splittable(Coupled())
    assert auto_micro_batch(Coupled(), None, [torch.zeros(64, 3)], 30, "reparam") == 64  # never probed


def test_a_run_records_its_chunking_and_resumes_with_it(tmp_path, mmbench_home, monkeypatch):
    """A grid asked for chunks of 16 records them in run.json and its checkpoint; a checkpoint
    from before chunks existed resumes on whole batches (not set aside) and ends with the
    numbers of the uninterrupted run; a bad value or a posterior that cannot be split is one
    line with nothing made."""
    monkeypatch.setenv("MMBENCH_HOME", str(mmbench_home))
    grid = ["--dataset", "tiny-digits", "--posteriors", "moe", "--epochs", "2", "--metrics", "test_bound", "--quiet"]
    out = tmp_path / "runs"
    for bad, says in ((["--micro-batch", "0"], "micro_batch"), (["--posteriors", "test-coupled", "--micro-batch", "8"],
                                                                "does not declare its objective a mean over items")):
        rc, _, stderr = mmbench("run", *grid, *bad, "--out", str(out))
        assert rc == 2 and says in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not out.exists()
    rc, _, stderr = mmbench("run", *grid, "--micro-batch", "16", "--out", str(out))
    assert rc == 0, stderr
    run_dir = out / "tiny-digits" / "moe" / "seed-0"
    assert json.loads((run_dir / "run.json").read_text())["resolved_hparams"]["micro_batch"] == 16
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["config"]["micro_batch"] == 16
    rc, board, _ = mmbench("leaderboard", str(out), "--provenance")
    assert rc == 0 and "Steps in item chunks of 16 (1 of 1 runs)." in board

    whole = tmp_path / "whole"
    rc, _, stderr = mmbench("run", *grid, "--out", str(whole))  # auto: tiny steps stay whole
    assert rc == 0, stderr
    run_dir = whole / "tiny-digits" / "moe" / "seed-0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["resolved_hparams"]["micro_batch"] == info["resolved_hparams"]["batch_size"]
    finished = (run_dir / "metrics.jsonl").read_text()
    rc, board, _ = mmbench("leaderboard", str(whole), "--provenance")
    assert rc == 0 and "item chunks" not in board
    # an older checkpoint of its first epoch, written before there were chunks
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    first = tmp_path / "first"
    rc, _, stderr = mmbench("run", *[a if a != "2" else "1" for a in grid], "--out", str(first))
    assert rc == 0, stderr
    state = torch.load(first / "tiny-digits" / "moe" / "seed-0" / "checkpoint.pt", weights_only=True)
    del state["config"]["micro_batch"]
    state["config"]["epochs"] = 2
    torch.save(state, run_dir / "checkpoint.pt")
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    rc, _, stderr = mmbench("run", *grid, "--out", str(whole))
    assert rc == 0, stderr
    assert "resuming" in stderr and "from epoch 1 of 2" in stderr and "other settings" not in stderr
    strip = lambda text: [{k: v for k, v in json.loads(line).items() if k != "value" or json.loads(line)["metric"]
                           not in ("train_s", "step_ms")} for line in text.splitlines()]  # noqa: E731
    assert strip((run_dir / "metrics.jsonl").read_text()) == strip(finished)
