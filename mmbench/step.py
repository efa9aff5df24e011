"""One training step's forward and backward pass: on the whole batch, or item chunk by item chunk.

When a posterior's objective is a mean over the batch's items of per-item terms
(``Posterior.items_independent``: its importance weights, DReG factors, KLs and the strata of its
draws never span two items) and the model's networks treat items apart (no batch
normalisation), the gradient of the batch is the item-weighted sum of its chunks' gradients. Computing a
step chunk by chunk ("micro-batches", gradients added up in ``.grad``) is then the same step, not
an approximation: same bound, same gradient, to float rounding. What changes is where the
arithmetic's data lives. MMVAE's MNIST–SVHN step at K = 30 keeps 4.4 MiB an item for its
backward pass (mostly the SVHN decoder's activations of the item's 60 latents), 556 MiB for a
batch of 128: every element-wise kernel and every convolution then streams from memory. Six
items at a time fit the processor's cache, and the step runs twice as fast on a 2-core CPU
(results/cost.md). On a GPU, whose kernels want large batches, the batch stays whole unless a
chunk size is asked for.

Only the assignment of random draws to items depends on the chunking (a chunk draws for its own
items), so ``auto`` decides from the model, the run's settings, the device type and what the
installed torch keeps for the backward pass — never from timings or the processor's cache — and
a run records its chunking in run.json (``resolved_hparams.micro_batch``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .acceleration import autocast
from .errors import MMBenchError

#: auto's budget for the tensors one chunk keeps for its backward pass. Measured on a 2-core
#: EPYC (32 MiB of L3), MMVAE's MNIST–SVHN nets at K = 30, batch 128: moe (4.4 MiB an item)
#: ran its step 2.1–2.3x faster in chunks of 4–8 items (17–35 MiB) than whole (556 MiB),
#: 1.8x in chunks of 11, and chunks of 2 lost to per-call overheads; is-elbo (2.2 MiB an item)
#: fastest at 8–14.
SAVED_BYTES_BUDGET = 24 * 2**20
#: auto splits only a step that keeps at least this much: the default dataset's steps keep
#: 12–37 MiB a batch, polydigits' moe step 65 MiB, and chunks of them were no faster (their
#: time is in the decoders' matmuls, not in streaming activations).
SPLIT_FROM_BYTES = 4 * SAVED_BYTES_BUDGET
#: auto's smallest chunk: below it per-call overheads win (2 items were slower than 4–8)
MIN_CHUNK_ITEMS = 4
#: layers that normalise over the items of a batch: a chunk would see other statistics
BATCH_COUPLED = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                 nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)


def splitting_refused(posterior, model=None) -> str | None:
    """Why the steps of ``posterior`` (training ``model``, when given) cannot be computed in item
    chunks, or None when they can."""
    if not getattr(posterior, "items_independent", False):
        return (f"posterior '{posterior.name}' does not declare its objective a mean over items "
                "(items_independent), so its steps cannot be split into micro-batches")
    modules = model.modules() if model is not None else ()
    coupled = sorted({type(m).__name__ for m in modules if isinstance(m, BATCH_COUPLED)})
    if coupled:
        return (f"the networks of this model normalise over the batch ({', '.join(coupled)}), so its steps "
                "cannot be split into micro-batches")
    return None


def require_splittable(posterior, model=None) -> None:
    """Raise a one-line MMBenchError unless the steps may be computed in item chunks."""
    reason = splitting_refused(posterior, model)
    if reason:
        raise MMBenchError(f"{reason}; leave micro_batch unset")


def chunk_sizes(batch: int, micro_batch: int) -> list[int]:
    """The batch split into the fewest chunks of at most ``micro_batch`` items, as even as they
    can be (128 at 48 -> 43, 43, 42)."""
    chunks = max(1, math.ceil(batch / micro_batch))
    base, extra = divmod(batch, chunks)
    return [base + 1] * extra + [base] * (chunks - extra)


def backward_step(posterior, model, xs: list[Tensor], K: int, estimator: str, precision: str = "fp32",
                  micro_batch: int | None = None) -> tuple[Tensor, float]:
    """The objective's forward pass and backward pass on ``xs``, gradients added to ``.grad``
    (the caller zeroes them and steps the optimiser). With ``micro_batch`` smaller than the
    batch, item chunks of at most that many items, each loss scaled by its share of the batch;
    that needs ``posterior.items_independent``. Returns (the bound summed over the items, as a
    tensor on the device; the decoder passes the objective counted)."""
    batch = xs[0].shape[0]
    device = xs[0].device
    sizes = [batch] if micro_batch is None or micro_batch >= batch else chunk_sizes(batch, micro_batch)
    if len(sizes) > 1:
        require_splittable(posterior, model)
    bound_sum, start = torch.zeros((), device=device), 0
    for size in sizes:
        part = xs if size == batch else [x[start:start + size] for x in xs]
        with autocast(device, precision):
            result = posterior.objective(model, part, K, estimator)
        (result.loss * (size / batch) if size != batch else result.loss).backward()
        bound_sum = bound_sum + result.bound.detach() * size
        start += size
    return bound_sum, result.decoder_passes


def saved_bytes_per_item(posterior, model, xs: list[Tensor], K: int, estimator: str, precision: str = "fp32",
                         items: tuple[int, int] = (2, 4)) -> float:
    """Bytes the autograd graph of one step keeps for its backward pass, per batch item: the
    growth between steps on ``items`` items of ``xs`` (so the parameters, kept whatever the
    batch, cancel out), each stored tensor counted once. The model's state, its gradients and
    the random number generators (the CPU's, and the model's GPU's) are left as they were. The
    objective is called twice with the model in eval mode: state a plugin keeps on itself (a step
    counter) sees two extra calls."""
    measured = []
    counter = getattr(model, "latents_decoded", None)
    was_training = model.training
    model.eval()  # no running statistics updated by the probe
    try:
        device = xs[0].device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            for n in items:
                storages: dict[int, int] = {}

                def pack(t: Tensor) -> Tensor:
                    storage = t.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes()
                    return t

                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, precision):
                    posterior.objective(model, [x[:n] for x in xs], K, estimator)
                measured.append(sum(storages.values()))
    finally:
        model.train(was_training)
        if counter is not None:
            model.latents_decoded = counter
    return max(0.0, (measured[1] - measured[0]) / (items[1] - items[0]))


def auto_micro_batch(posterior, model, xs: list[Tensor], K: int, estimator: str, precision: str = "fp32") -> int:
    """Items per chunk for ``micro_batch`` auto, given a first batch ``xs``: the whole batch on a
    GPU, where splitting is refused (``splitting_refused``), or where the step's saved tensors are
    less than SPLIT_FROM_BYTES; else the batch in as many chunks as SAVED_BYTES_BUDGET goes into
    those tensors whole times, of at least MIN_CHUNK_ITEMS items."""
    batch = xs[0].shape[0]
    if xs[0].device.type != "cpu" or batch < 2 * MIN_CHUNK_ITEMS or splitting_refused(posterior, model):
        return batch
    try:
        saved = saved_bytes_per_item(posterior, model, xs, K, estimator, precision) * batch
    except Exception:  # an objective that cannot run on a few items: whole batches, where its errors surface as ever
        return batch
    if saved < SPLIT_FROM_BYTES:
        return batch
    return max(MIN_CHUNK_ITEMS, math.ceil(batch / int(saved // SAVED_BYTES_BUDGET)))


def resolve_micro_batch(requested: int | None, posterior, model, split, batch_size: int, K: int, estimator: str,
                        precision: str = "fp32") -> int:
    """Items per chunk of a run's steps, at most the batch size: ``requested``, or for None auto's
    choice on the split's first batch as the run will see it. A request where splitting is refused
    is an error (the grid refuses a posterior without ``items_independent`` before anything is
    made; a model's batch normalisation is seen only once it is built)."""
    if requested is not None:
        require_splittable(posterior, model)
        return min(requested, batch_size)
    rows = torch.arange(min(batch_size, len(split)), device=split.index.device)
    chosen = auto_micro_batch(posterior, model, split.batch(rows, model.names), K, estimator, precision)
    return batch_size if chosen >= len(rows) else chosen  # whole: the batch size, even where the split is smaller
