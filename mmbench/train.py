"""The training loop: data resident on the device, shuffles by index, a checkpoint every epoch,
exact resumption (model, optimiser, RNG states, epoch), and divergence caught as it happens."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from .api import Split
from .datasets import atomic_torch_save
from .errors import MMBenchError
from .step import backward_step


@dataclass
class TrainConfig:
    epochs: int
    K: int
    batch_size: int
    lr: float
    estimator: str
    seed: int
    precision: str = "fp32"  # "bf16": the forward pass under bf16 autocast (mmbench.acceleration)
    micro_batch: int | None = None  # items per forward/backward chunk of a step; None: the whole batch (mmbench.step)


class Diverged(Exception):
    """The objective became NaN or infinite."""

    def __init__(self, epoch: int, step: int, last_finite_epoch: int):
        super().__init__(f"loss not finite at epoch {epoch}, step {step}")
        self.epoch, self.step, self.last_finite_epoch = epoch, step, last_finite_epoch


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint's contents, or None when it is absent. Raises MMBenchError when corrupt."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MMBenchError(f"checkpoint {path} is unreadable ({type(exc).__name__}): {exc}") from None


def make_optimizer(model, lr: float):
    return torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)


def train(model, posterior, split: Split, cfg: TrainConfig, *, checkpoint: Path | None = None,
          resume: dict | None = None, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` with ``posterior``'s objective; returns one record per epoch.

    ``resume`` is a checkpoint dict from an interrupted run of the same config; training then
    continues from the epoch after it with the saved RNG states, so that the result equals
    an uninterrupted run on the CPU. ``on_epoch(record)`` is called with each epoch's record
    once its checkpoint is written (experiment trackers follow the run through it)."""
    names = model.names
    optimizer = make_optimizer(model, cfg.lr)
    history: list[dict] = []
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        _set_rng_state(resume["rng"])
        history = list(resume["history"])
        start = resume["epoch"]
    else:
        torch.manual_seed(cfg.seed)
    n = len(split)
    steps = math.ceil(n / cfg.batch_size)
    device = split.index.device
    show_bar = progress and sys.stderr.isatty()
    for epoch in range(start, cfg.epochs):
        model.train()
        # The order of an epoch depends only on (seed, epoch): resumption needs no extra state.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)).to(device)
        t0 = time.perf_counter()
        bound_sum, passes = torch.zeros((), device=device), 0.0
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr)
        for step in range(steps):
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xs = split.batch(rows, names)
            optimizer.zero_grad(set_to_none=True)
            step_bound, passes = backward_step(posterior, model, xs, cfg.K, cfg.estimator, cfg.precision,
                                               cfg.micro_batch)
            optimizer.step()
            bound_sum += step_bound
            if bar is not None:
                bar.update()
                if step % 20 == 0:
                    # Reading the value syncs the device; only the progress bar does it, rarely.
                    bar.set_postfix(bound=f"{step_bound.item() / len(rows):.1f}")
        if bar is not None:
            bar.close()
        epoch_bound = (bound_sum / n).item()
        if not math.isfinite(epoch_bound):
            raise Diverged(epoch + 1, steps, history[-1]["epoch"] if history else 0)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "bound": epoch_bound, "seconds": seconds,
                        "step_ms": 1000 * seconds / steps, "decoder_passes": passes})
        if progress:
            print(f"  epoch {epoch + 1}/{cfg.epochs}  bound {epoch_bound:.1f}  {seconds:.1f} s", file=sys.stderr)
        if checkpoint is not None:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "rng": _rng_state(), "epoch": epoch + 1, "history": history,
                               "config": asdict(cfg)}, checkpoint)
        if on_epoch is not None:
            on_epoch(history[-1])
    return history
