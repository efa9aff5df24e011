"""Executors: how the cells of a grid are carried out. ``local`` runs them on this machine,
``ray`` on a Ray cluster. More come from plugins through the ``register_executors`` hook.

Every executor ends up calling :func:`mmbench.grid.run_cell` for each cell, so every cell runs
under its run directory's lock and writes into the one results directory: two executors, or
two machines sharing that directory, never train the same cell twice at once.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import hookimpl
from .errors import MMBenchError


class Executor:
    """Carries out a grid: ``run(cells, job, plugins)`` returns one run.json record per cell,
    in the order of ``cells``. A cell that another runner holds is waited for, never run twice."""

    name: str
    description: str = ""

    def run(self, cells: list, job, plugins) -> list[dict]:
        raise NotImplementedError


# ------------------------------------------------------------------------------ local
_worker_device: str | None = None


def _claim_device(devices, cpu_threads: int | None = None) -> None:
    global _worker_device
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
                   "per GPU (--workers N sets the count)")

    def run(self, cells, job, plugins):
        import torch

        gpus = torch.cuda.device_count() if job.device in ("auto", "cuda") else 0
        workers = job.workers or (gpus if gpus > 1 else 1)
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


# ------------------------------------------------------------------------------ ray
class RayExecutor(Executor):
    name = "ray"
    description = ("a Ray cluster: each cell a task with its CPU/GPU request; --address joins a "
                   "running cluster, none starts a local one. Needs `pip install mmbench[ray]`, and "
                   "the results directory at the same path on every node")

    def run(self, cells, job, plugins):
        try:
            import ray
        except ImportError:
            raise MMBenchError("--executor ray needs Ray, which is not installed here: pip install 'mmbench[ray]'") from None
        from .grid import label, run_in_worker

        # Workers do not share the driver's working directory: give them absolute paths.
        job.out, job.data_dir, job.cache_dir = (Path(p).resolve() for p in (job.out, job.data_dir, job.cache_dir))
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=job.address, include_dashboard=False, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = job.address or "a new local cluster"
                raise MMBenchError(f"could not start or reach Ray at {where}: {exc}") from None
        try:
            gpus = job.gpus_per_cell
            if gpus is None:
                gpus = 1 if job.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
            task = ray.remote(run_in_worker).options(num_cpus=job.cpus_per_cell, num_gpus=gpus)
            pending = {task.remote(spec, job): i for i, spec in enumerate(cells)}
            print(f"mmbench: {len(cells)} cells submitted to Ray ({job.cpus_per_cell} CPU, {gpus} GPU each)",
                  file=sys.stderr)
            infos: list[dict | None] = [None] * len(cells)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                try:
                    infos[i] = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the worker died, its node went away, ...
                    infos[i] = {"status": "failed", "reason": f"Ray task failed: {type(exc).__name__}: {exc}"}
                print(f"{label(cells[i])} {infos[i].get('status')}", file=sys.stderr)
            return infos
        finally:
            if started:
                ray.shutdown()


@hookimpl
def register_executors(register):
    register(LocalExecutor())
    register(RayExecutor())
