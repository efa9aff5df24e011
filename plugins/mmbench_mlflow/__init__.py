"""``mlflow``: a tracker recording each run as an MLflow run, without a server. By default in an
SQLite store of the run's own, ``<run_dir>/mlflow/mlflow.db``, with the artifacts under
``<run_dir>/mlflow/artifacts/`` (``mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow/mlflow.db``
shows it); ``--set mlflow.uri=sqlite:////abs/path/mlflow.db`` (or a server's ``http://…``)
puts the runs of a whole grid into one store. MLflow 3 keeps its file store
(``./mlruns``) only behind ``MLFLOW_ALLOW_FILE_STORE``, so SQLite it is: it needs
``pip install mlflow-skinny sqlalchemy alembic`` (or the full ``mlflow``).

What it logs: the spec's hyper-parameters and options as params (``hparams.K``,
``options.loglik.samples``, ...), the dataset, posterior and seed as tags; step = epoch,
``train/bound`` (run.json's per-epoch training bound), ``train/seconds``, ``train/step_ms``,
``train/decoder_passes``; once evaluated, ``metrics/<name>`` for each metric value, named as
MLflow allows (``coherence_cross[a->b]`` is ``metrics/coherence_cross/a to b``; the exact rows
are also the artifact ``metrics.json``); each artifact file under its run-relative folder; the
run ends FINISHED (done) or FAILED.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from pathlib import Path

from mmbench import hookimpl
from mmbench.api import Option, Tracker

FOLDER = "mlflow"
#: what MLflow allows in a metric's or param's name (mlflow.utils.validation, POSIX)
ALLOWED = re.compile(r"[^/\w.\- ]")
BATCH = 100  # params per log_batch request, MLflow's limit


def mlflow_name(metric: str) -> str:
    """A metric value's name as MLflow accepts it: ``family[a->b]`` -> ``family/a to b``,
    ``loglik[m|m,n]`` -> ``loglik/m given m and n``, ``coherence_cond[k=2]`` -> ``coherence_cond/k 2``."""
    family, bracket, detail = metric.partition("[")
    if bracket:
        detail = detail.rstrip("]")
        for old, new in (("->", " to "), ("|", " given "), (",", " and "), ("=", " ")):
            detail = detail.replace(old, new)
        metric = f"{family}/{' '.join(detail.split())}"
    return ALLOWED.sub("_", metric)


def _flat(prefix: str, value) -> dict[str, str]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(f"{prefix}.{key}", item).items()}
    return {ALLOWED.sub("_", prefix): str(value)[:6000]}


class MLflow(Tracker):
    name = "mlflow"
    description = "an MLflow run per mmbench run, in <run_dir>/mlflow/mlflow.db (SQLite) or the store mlflow.uri names"
    options = (
        Option("uri", None, "the tracking store (default: sqlite:///<run_dir>/mlflow/mlflow.db, the run's own)", type=str),
        Option("experiment", "mmbench", "the MLflow experiment the runs go into"),
    )

    def _needs(self) -> list[str]:
        uri = self.option_values["uri"]
        sql = uri is None or uri.split(":", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")
        return ["mlflow", *(("sqlalchemy", "alembic") if sql else ())]

    def unavailable(self):
        missing = [m for m in self._needs() if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{', '.join(missing)} not installed: pip install mlflow-skinny sqlalchemy alembic "
                    "(or pip install mlflow)")
        return None

    def start(self, run_info):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.run_dir = Path(run_info["run_dir"])
        uri, location = self.option_values["uri"], None
        if uri is None:
            (self.run_dir / FOLDER).mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{self.run_dir / FOLDER / 'mlflow.db'}"
            location = (self.run_dir / FOLDER / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self._experiment(self.option_values["experiment"], location)
        spec = run_info["spec"]
        tags = {"mmbench.dataset": spec["dataset"], "mmbench.posterior": spec["posterior"],
                "mmbench.seed": str(spec["seed"]), "mmbench.run_dir": str(self.run_dir)}
        self.run_id = self.client.create_run(experiment, run_name=run_info["name"], tags=tags).info.run_id
        params = {**_flat("hparams", run_info.get("resolved_hparams", {})), **_flat("options", spec.get("options", {})),
                  **_flat("dataset_options", spec.get("dataset_options", {}))}
        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])
        self.last_epoch = 0

    def _experiment(self, name: str, location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another worker of the grid made it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_epoch(self, epoch, values):
        self._log({f"train/{k}": v for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}, epoch)
        self.last_epoch = epoch

    def log_metrics(self, rows):
        self._log({f"metrics/{mlflow_name(r['metric'])}": r["value"] for r in rows}, self.last_epoch)
        self.client.log_dict(self.run_id, rows, "metrics.json")

    def log_artifact(self, path):
        path = Path(path)
        folder = path.parent.relative_to(self.run_dir).as_posix() if path.is_relative_to(self.run_dir) else None
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self, status):
        self.client.set_terminated(self.run_id, "FINISHED" if status == "done" else "FAILED")


@hookimpl
def register_trackers(register):
    register(MLflow())
