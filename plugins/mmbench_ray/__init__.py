"""The ``ray`` executor: each cell of a grid a Ray task with its CPU/GPU request, on a running
cluster (``ray.address``) or a local one started for the grid. Needs ``pip install
'mmbench[ray]'``, and the results directory at the same path on every node."""

from __future__ import annotations

import sys
from pathlib import Path

from mmbench import hookimpl
from mmbench.api import Executor, Option
from mmbench.errors import MMBenchError
from mmbench.grid import label, run_in_worker


class RayExecutor(Executor):
    name = "ray"
    description = ("a Ray cluster: each cell a task with its CPU/GPU request; ray.address joins a "
                   "running cluster, none starts a local one. Needs `pip install mmbench[ray]`, and "
                   "the results directory at the same path on every node")
    # The aliases are the flags and grid-file keys these had when the core held them.
    options = (
        Option("address", None, "the Ray cluster to join (default: start a local one)", type=str,
               aliases=("address",)),
        Option("cpus_per_cell", 1.0, "CPUs a Ray task asks for (default: 1)", low=0, aliases=("cpus_per_cell",)),
        Option("gpus_per_cell", None, "GPUs a Ray task asks for (default: 1 where the cluster has GPUs)",
               type=float, low=0, aliases=("gpus_per_cell",)),
    )

    def run(self, cells, job, plugins):
        try:
            import ray
        except ImportError:
            raise MMBenchError("--executor ray needs Ray, which is not installed here: pip install 'mmbench[ray]'") from None
        settings = self.option_values
        # Workers do not share the driver's working directory: give them absolute paths.
        job.out, job.data_dir, job.cache_dir = (Path(p).resolve() for p in (job.out, job.data_dir, job.cache_dir))
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=settings["address"], include_dashboard=False, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = settings["address"] or "a new local cluster"
                raise MMBenchError(f"could not start or reach Ray at {where}: {exc}") from None
        try:
            cpus, gpus = settings["cpus_per_cell"], settings["gpus_per_cell"]
            if gpus is None:
                gpus = 1 if job.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
            task = ray.remote(run_in_worker).options(num_cpus=cpus, num_gpus=gpus)
            pending = {task.remote(spec, job): i for i, spec in enumerate(cells)}
            print(f"mmbench: {len(cells)} cells submitted to Ray ({cpus:g} CPU, {gpus:g} GPU each)", file=sys.stderr)
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
    register(RayExecutor())
