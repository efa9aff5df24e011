"""The core's own executor, ``local``: the cells of a grid on this machine. Others (a cluster's)
come from plugins through the ``register_executors`` hook, registered the same way.

Every executor ends up calling :func:`mmbench.grid.run_cell` for each cell, so every cell runs
under its run directory's lock and writes into the one results directory: two executors, or
two machines sharing that directory, never train the same cell twice at once.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from . import hookimpl
from .api import Executor, Option


# ------------------------------------------------------------------------------ local
_worker_device: str | None = None


def _exit_with(parent: int, every_s: float = 1.0) -> None:
    """End this worker once the runner that started it is gone (killed, say): an orphaned
    worker would train its cell on, unseen, beside the next runner's (seen: two stray workers
    beside a resumed grid's two). Its cell resumes from its last epoch, like any killed run."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def _claim_device(devices, cpu_threads: int | None = None) -> None:
    global _worker_device
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True, name="exit-with-runner").start()
    _worker_device = devices.get()
    if cpu_threads:
        import torch

        torch.set_num_threads(cpu_threads)


def _run_on_claimed_device(spec, job) -> dict:
    from .grid import run_in_worker

    return run_in_worker(spec, job, _worker_device)


class LocalExecutor(Executor):
    name = "local"
    description = ("this machine: one cell after another; with several GPUs one worker process "
                   "per GPU (local.workers sets the count)")
    by_default = True
    options = (Option("workers", None, "worker processes (default: one per GPU when several, else 1)",
                      type=int, low=1, aliases=("workers",)),)

    def run(self, cells, job, plugins):
        import torch

        gpus = torch.cuda.device_count() if job.device in ("auto", "cuda") else 0
        workers = self.option_values["workers"] or (gpus if gpus > 1 else 1)
        if workers > 1:
            devices = [f"cuda:{i % gpus}" for i in range(workers)] if gpus > 1 else [job.device] * workers
            on_cpu = gpus == 0 and not job.device.startswith("cuda")
            return self._pool(cells, job, devices, on_cpu)
        return self._in_process(cells, job, plugins)

    def _in_process(self, cells, job, plugins):
        from .device import resolve_device
        from .grid import run_cell

        device = resolve_device(job.device)
        data_cache: dict = {}
        infos: dict[int, dict] = {}
        # First pass: cells another runner holds are left for later, so both make progress.
        for i, spec in enumerate(cells):
            info = run_cell(spec, job, plugins, device, data_cache, wait=False)
            if info is not None:
                infos[i] = info
        for i, spec in enumerate(cells):
            if i not in infos:
                infos[i] = run_cell(spec, job, plugins, device, data_cache, wait=True)
        return [infos[i] for i in range(len(cells))]

    def _pool(self, cells, job, devices, on_cpu: bool):
        context = multiprocessing.get_context("spawn")  # CUDA cannot live through a fork
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        # CPU workers share the cores: each takes its part, or they spin-wait on each other's
        # threads (30x slower seen on 2 cores). OMP_NUM_THREADS, when set, is the user's choice.
        cpu_threads = (max(1, (os.cpu_count() or 1) // len(devices))
                       if on_cpu and "OMP_NUM_THREADS" not in os.environ else None)
        print(f"mmbench: {len(devices)} workers on {', '.join(devices)}"
              + (f", {cpu_threads} CPU thread(s) each" if cpu_threads else ""), file=sys.stderr)
        with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_claim_device,
                                 initargs=(queue, cpu_threads)) as pool:
            return list(pool.map(_run_on_claimed_device, cells, [job] * len(cells)))


@hookimpl
def register_executors(register):
    register(LocalExecutor())
