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
