"""The cost of one training step against the number of modalities M (and K, batch size):
time, decoder passes counted, peak memory, FLOPs (and the decoders' share of them), and the
share of the machine's own matmul throughput that a step achieves, with the load average at
each cell (timings on a busy machine are inflated; the load says by how much to distrust them).

The MMVAE paper (Shi et al., NeurIPS 2019, §3 and Appendix B) says the stratified bound of
Eq. 3 needs M² decoder passes and that the importance-sampled ELBO is linear in M; this
module measures both on synthetic tensors shaped by a dataset's modalities (no data is
loaded), fits the growth exponent of time against M by least squares on log-log axes, and
sets it beside each posterior's declared cost model, ``Posterior.decoder_passes(M)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass

import torch

from .acceleration import autocast, prepare_model
from .model import MultimodalVAE
from .results import atomic_save_figure
from .train import make_optimizer


@dataclass
class StepCost:
    """One (posterior, M, K, batch) cell: a training step measured."""

    posterior: str
    sweep: str  # which axis this cell belongs to: "M", "K" or "batch"
    M: int
    K: int
    batch: int
    median_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    passes_counted: float
    passes_declared: int
    peak_mb: float
    memory: str  # how peak memory was measured
    gflop: float  # one step, forward + backward (matmuls and convolutions)
    gemm_fraction: float  # (gflop / time) / the large GEMM's rate in this process
    decoder_flop_share: float = float("nan")  # of gflop, the decoders' (forward + backward)
    load1: float = float("nan")  # the 1-minute load average when the cell was measured

    def row(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ the step itself
def synthetic_batch(model: MultimodalVAE, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """A batch per modality, shaped and typed as real data: each decoder's mean output for
    random latents (images in [0, 1], tokens as int64), made on the model's device. Through
    the model contract (its prior's size, ``decode``), so a model with private blocks works."""
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(batch, model.prior().mean.shape[-1], generator=g).to(device)
        return [m.decode_mean(model.decode(d, z)).detach() for d, m in enumerate(model.modalities)]


def make_step(posterior, model, xs, K: int, estimator: str, precision: str = "fp32"):
    """A closure running one training step: objective, backward, Adam update. It reads no
    value back to the host, so on an accelerator it only queues work."""
    device = xs[0].device
    optimizer = make_optimizer(model, 1e-3)

    def step():
        with autocast(device, precision):
            result = posterior.objective(model, xs, K, estimator)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        return result

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Wall seconds of each of ``repeats`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):
    _PAGE = 4096


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory(step, device: torch.device) -> tuple[float, str]:
    """Peak memory of one step above what was held before it, in MB, and how it was measured:
    CUDA's max_memory_allocated on a GPU; on the CPU the resident set size sampled every
    millisecond by a thread (after malloc_trim, so freed heap is returned first) — an
    upper-bound-ish estimate that includes allocator slack."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda max_memory_allocated"
    try:
        _rss_bytes()
    except OSError:
        step()
        return float("nan"), "unavailable (no /proc)"
    _malloc_trim()
    before = _rss_bytes()
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - before) / 2**20, "cpu RSS delta (1 ms sampling)"


def step_flops(step) -> tuple[float, object]:
    """FLOPs of one step (forward + backward), as torch's FlopCounterMode counts them:
    matmuls and convolutions, which are where nearly all of a step's arithmetic is — and
    the step's result."""
    counter = _flop_counter()
    with counter:
        result = step()
    return float(counter.get_total_flops()), result


def _flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False)


def decoder_flops(model: MultimodalVAE, step) -> tuple[float, float, object]:
    """(FLOPs of the whole step, FLOPs of its decoders, the step's result): the decoders'
    share from the latents each decoder received in the step times its forward + backward
    FLOPs per latent (these networks are linear in their batch)."""
    rows = [0] * len(model.decoders)
    inputs: dict[int, tuple] = {}

    def counting(d):
        def hook(_module, args):
            rows[d] += args[0].shape[0]
            inputs[d] = tuple(args[0].shape[1:])  # what the model feeds it (e.g. shared + private)
        return hook

    handles = [dec.register_forward_pre_hook(counting(d)) for d, dec in enumerate(model.decoders)]
    try:
        total, result = step_flops(step)
    finally:
        for h in handles:
            h.remove()
    device = next(model.parameters()).device
    per_latent = []
    for d, dec in enumerate(model.decoders):
        if d not in inputs:  # never called in the step: no FLOPs to count
            per_latent.append(0.0)
            continue
        z = torch.zeros(2, *inputs[d], device=device, requires_grad=True)
        counter = _flop_counter()
        with counter:
            dec(z).float().sum().backward()
        per_latent.append(counter.get_total_flops() / 2)
    model.zero_grad(set_to_none=True)
    return total, sum(r * f for r, f in zip(rows, per_latent)), result


def default_gemm_size(device: torch.device) -> int:
    return 8192 if device.type == "cuda" else 1536


def gemm_rate(device: torch.device, precision: str, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul on this device, in the step's precision: the best of
    ``repeats`` (the machine's attainable rate, which a busy machine only lowers)."""
    size = size or default_gemm_size(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = time_step(lambda: a @ b, device, repeats, warmup=2)
    return 2 * size**3 / min(times)


# ------------------------------------------------------------------ a grid of cells
def growth_exponent(xs, ys) -> float:
    """The least-squares slope of log y against log x: y ∝ x^slope."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")


def measure(dataset, posterior, *, M: int, K: int, batch: int, latent_dim: int, device: torch.device,
            sweep: str = "M", repeats: int = 5, warmup: int = 1, precision: str = "fp32",
            compile: bool = False, estimator: str | None = None, gemm: float | None = None,
            seed: int = 0, layout: str | None = None) -> StepCost:
    """Measure one training step of ``posterior`` on ``dataset`` configured with M modalities."""
    modalities = dataset.configure(modalities=M).modalities
    torch.manual_seed(seed)
    model = posterior.build_model(modalities, latent_dim).to(device)
    xs = synthetic_batch(model, batch, seed)
    prepare_model(model, precision, compile=compile, layout=layout)  # as training runs it
    step = make_step(posterior, model, xs, K, estimator or posterior.estimators[0], precision)
    # The FLOP-counting and the memory-measuring steps are the first two untimed steps.
    flops, decoders, result = decoder_flops(model, step)
    peak, how = peak_memory(step, device)
    times = time_step(step, device, repeats, warmup)
    median = statistics.median(times)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (median,) * 3
    return StepCost(posterior.name, sweep, M, K, batch, 1000 * median, 1000 * q1, 1000 * q3, len(times),
                    float(result.decoder_passes), posterior.decoder_passes(len(modalities)), peak, how,
                    flops / 1e9, (flops / median) / gemm if gemm else float("nan"),
                    decoders / flops if flops else float("nan"), (load_averages() or [float("nan")])[0])


def load_averages() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def run_grid(dataset, posteriors, *, modalities, K: int, batch: int, latent_dim: int, device,
             Ks=(), batches=(), progress=None, **kw) -> list[StepCost]:
    """Every posterior against M (at K, batch), then against K and batch size at the first M."""
    cells = []
    plan = [("M", M, K, batch) for M in modalities]
    plan += [("K", modalities[0], k, batch) for k in Ks]
    plan += [("batch", modalities[0], K, b) for b in batches]
    for posterior in posteriors:
        for sweep, M, k, b in plan:
            cell = measure(dataset, posterior, M=M, K=k, batch=b, latent_dim=latent_dim, device=device,
                           sweep=sweep, **kw)
            cells.append(cell)
            if progress:
                progress(cell)
    return cells


def exponents(cells: list[StepCost]) -> list[dict]:
    """Per posterior and sweep: the fitted exponents of time (and counted passes) against the
    swept variable, and the declared cost model's own exponent over the same M."""
    out = []
    for name in dict.fromkeys(c.posterior for c in cells):
        for sweep in ("M", "K", "batch"):
            sel = [c for c in cells if c.posterior == name and c.sweep == sweep]
            if len(sel) < 2:
                continue
            x = [getattr(c, sweep) for c in sel]
            row = {"posterior": name, "against": sweep, "range": f"{min(x)}..{max(x)}",
                   "time_exponent": growth_exponent(x, [c.median_ms for c in sel]),
                   "flop_exponent": growth_exponent(x, [c.gflop for c in sel])}
            if sweep == "M":
                row["passes_exponent"] = growth_exponent(x, [c.passes_counted for c in sel])
                row["declared_exponent"] = growth_exponent(x, [c.passes_declared for c in sel])
            out.append(row)
    return out


# ------------------------------------------------------------------ reporting
def _fmt(value, digits=2):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def cells_table(cells: list[StepCost]) -> str:
    """A markdown table, one row per measured cell."""
    head = ("| posterior | sweep | M | K | batch | step ms (median) | IQR ms | passes counted | "
            "passes declared | peak MB | GFLOP | decoders' % of FLOP | % GEMM | load |")
    lines = [head, "|" + "---|" * 14]
    for c in cells:
        lines.append(f"| {c.posterior} | {c.sweep} | {c.M} | {c.K} | {c.batch} | {c.median_ms:.1f} | "
                     f"{c.q1_ms:.1f}–{c.q3_ms:.1f} | {c.passes_counted:g} | {c.passes_declared} | "
                     f"{_fmt(c.peak_mb, 1)} | {c.gflop:.2f} | {_fmt(100 * c.decoder_flop_share, 1)} | "
                     f"{_fmt(100 * c.gemm_fraction, 1)} | {_fmt(c.load1, 1)} |")
    return "\n".join(lines)


def exponents_table(rows: list[dict]) -> str:
    lines = ["| posterior | against | range | time exponent | FLOP exponent | counted-passes exponent | "
             "declared exponent |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['posterior']} | {r['against']} | {r['range']} | {_fmt(r['time_exponent'])} | "
                     f"{_fmt(r.get('flop_exponent'))} | {_fmt(r.get('passes_exponent'))} | "
                     f"{_fmt(r.get('declared_exponent'))} |")
    return "\n".join(lines)


def machine_header(machine: dict) -> str:
    """What a reader of cost.md needs to judge the numbers: the command, the machine, its load
    before and after, and the GEMM rate every '% GEMM' is relative to."""
    load = machine.get("load_average", {})
    fmt_load = lambda t: "/".join(f"{v:.2f}" for v in t) if t else "unknown"  # noqa: E731
    return "\n".join([
        f"    {machine['command']}", "",
        f"- when: {machine.get('started', '?')} to {machine.get('finished', '?')}",
        f"- machine: {machine.get('device_name') or machine['device']} ({machine['device']}), "
        f"{machine['threads']} torch threads, torch {machine['torch']}",
        f"- arithmetic: {machine['precision']}{', compiled networks' if machine.get('compile') else ''}"
        f"{', channels-last convolutions' if machine.get('layout') == 'channels_last' else ''}",
        f"- load average (1/5/15 min): {fmt_load(load.get('before'))} before, {fmt_load(load.get('after'))} after "
        "(on a quiet machine, at most about 1 per thread in use)",
        f"- reference GEMM ({machine['gemm_size']}² {machine['precision']} matmul, this process): "
        f"{machine['gemm_gflops']:.1f} GFLOP/s before, {machine['gemm_gflops_after']:.1f} after; "
        "'% GEMM' is a step's GFLOP/s over the higher of the two",
    ])


def plot(cells: list[StepCost], path) -> None:
    """Log-log plots of step time against M (with each declared cost model, scaled to the
    first point, dashed), K and batch size; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in ("M", "K", "batch") if sum(c.sweep == s for c in cells) > 1 or s == "M"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 4), squeeze=False)
    for ax, sweep in zip(axes[0], sweeps):
        for i, name in enumerate(dict.fromkeys(c.posterior for c in cells)):
            sel = sorted((c for c in cells if c.posterior == name and c.sweep == sweep), key=lambda c: getattr(c, sweep))
            if not sel:
                continue
            x = [getattr(c, sweep) for c in sel]
            colour = f"C{i}"
            ax.errorbar(x, [c.median_ms for c in sel], fmt="o-", color=colour, label=name,
                        yerr=[[c.median_ms - c.q1_ms for c in sel], [c.q3_ms - c.median_ms for c in sel]])
            if sweep == "M":
                scale = sel[0].median_ms / sel[0].passes_declared
                ax.plot(x, [scale * c.passes_declared for c in sel], "--", color=colour, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel({"M": "modalities M", "K": "samples K", "batch": "batch size"}[sweep])
        ax.set_ylabel("training step (ms)")
        ax.set_title(f"step time against {sweep}" + (" (dashed: declared passes)" if sweep == "M" else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)

