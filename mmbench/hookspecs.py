"""The hooks a plugin may implement. Each receives a ``register`` callback: the host
validates what is registered, refuses duplicates and records which plugin provided it."""

import pluggy

hookspec = pluggy.HookspecMarker("mmbench")


@hookspec
def register_datasets(register):
    """Register datasets: call ``register(dataset)`` with :class:`mmbench.api.Dataset` objects.

    A dataset names its paired modalities (each a :class:`mmbench.api.Modality`), knows how
    to obtain its data and carries the paper's hyper-parameters as its defaults."""


@hookspec
def register_posteriors(register):
    """Register joint posteriors: call ``register(posterior)`` with
    :class:`mmbench.api.Posterior` objects (how experts combine, plus the training objective)."""


@hookspec
def register_metrics(register):
    """Register metrics: call ``register(metric)`` with :class:`mmbench.api.Metric` objects,
    each declaring its criterion, unit and ``higher_is_better``."""


@hookspec
def register_artifacts(register):
    """Register artifacts: call ``register(artifact)`` with :class:`mmbench.api.Artifact` objects,
    each writing files beside a trained run (pictures, JSON, HTML) through the evaluation context
    metrics get. run.json lists what each wrote; the leaderboard links it."""


@hookspec
def register_trackers(register):
    """Register experiment trackers: call ``register(tracker)`` with :class:`mmbench.api.Tracker`
    objects, each receiving a run's start, per-epoch bound, metrics, artifacts and end (to
    TensorBoard, MLflow, ...), picked with ``mmbench run --tracker NAME``; none by default."""


@hookspec
def register_executors(register):
    """Register executors: call ``register(executor)`` with :class:`mmbench.api.Executor`
    objects, each carrying out the cells of a grid somewhere (``local``: this machine; a
    plugin's: a cluster), picked with ``mmbench run --executor NAME``. An executor should run each
    cell through :func:`mmbench.grid.run_cell`, which takes the cell's lock and writes the run
    directory, so that executors on several machines can share one results directory."""


@hookspec
def register_published(register):
    """Register published results: call ``register(PublishedFile(path))``
    (:class:`mmbench.published.PublishedFile`) for each TOML file of numbers read in one paper,
    every record with its source table and setting (the format: :mod:`mmbench.published`).
    ``mmbench published`` lists them; ``mmbench leaderboard DIR --published`` shows them beside
    the runs wherever dataset and metric match."""
