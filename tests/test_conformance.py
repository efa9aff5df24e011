"""Every plugin the suite loads passes the same conformance checks a plugin author runs in their
own tests (mmbench.testing): posteriors, datasets, metrics, artifacts and trackers, one test each."""

import pytest

from mmbench.errors import DataError
from mmbench.plugins import get_plugins
from mmbench.testing import (ToyDataset, check_artifact, check_dataset, check_metric, check_posterior, check_tracker,
                             tiny_context)

PLUGINS = get_plugins()


# Tiny models gain nothing from a second thread, and on a busy machine its spin-waiting costs
# far more than it brings (a toy judge: 1 CPU-second on one thread, 31 on two).
pytestmark = pytest.mark.usefixtures("single_thread")
#: options that keep a dataset small for these checks (the contract holds for any options)
SMALL = {"digits": {"partners": 1}, "polydigits": {"modalities": 3, "partners": 1, "per_class": 8}}
#: metric options that keep the metrics quick
QUICK = {"coherence_cross": {"items": 64}, "coherence_cross_alt": {"items": 64}, "loglik": {"samples": 8, "items": 16}}


def _small(name):
    return PLUGINS.datasets.get(name).configure(**SMALL.get(name, {}))


@pytest.mark.parametrize("name", PLUGINS.posteriors.names())
def test_posterior_conforms(name):
    posterior = PLUGINS.posteriors.get(name)
    counted = check_posterior(posterior)
    assert counted == {M: posterior.decoder_passes(M) for M in (2, 3)}


@pytest.mark.parametrize("name", PLUGINS.datasets.names())
def test_dataset_conforms(name, mmbench_home):
    dataset = _small(name)
    try:
        dataset.load(mmbench_home / "data")
    except DataError as exc:
        pytest.skip(f"dataset '{name}': its data are not present ({exc})")
    check_dataset(dataset, data_dir=mmbench_home / "data")


@pytest.fixture(scope="module")
def contexts(mmbench_home, tmp_path_factory):
    """Tiny trained models, built on first use: the toy dataset, the toy dataset with captions
    (for metrics that need text), then each registered dataset (small) for metrics neither serves."""
    posterior = PLUGINS.posteriors.get("poe" if "poe" in PLUGINS.posteriors else PLUGINS.posteriors.names()[0])
    built = {}

    def get(name):
        if name not in built:
            if name.startswith("toy"):
                built[name] = tiny_context(posterior, ToyDataset(caption=name == "toy+caption"),
                                           run_dir=tmp_path_factory.mktemp("run"))
            else:
                dataset = _small(name)
                data = dataset.load(mmbench_home / "data")
                built[name] = tiny_context(posterior, dataset, data, latent_dim=4,
                                           batch_size=256, cache_dir=mmbench_home / "cache",
                                           run_dir=tmp_path_factory.mktemp("run"))
        return built[name]

    return get


@pytest.mark.parametrize("name", PLUGINS.metrics.names())
def test_metric_conforms(name, contexts):
    metric = PLUGINS.metrics.get(name).configure(**QUICK.get(name, {}))
    reasons = {}
    for where in ["toy", "toy+caption", *PLUGINS.datasets.names()]:
        try:
            ctx = contexts(where)
        except DataError as exc:
            reasons[where] = f"data not present: {exc}"
            continue
        reason = metric.skip_reason(ctx)
        if reason is not None:
            reasons[where] = reason
            continue
        values = check_metric(metric, ctx)
        assert values and all(v.name for v in values)
        return
    pytest.skip(f"metric '{name}' applies to none of the datasets here: {reasons}")


@pytest.mark.parametrize("name", PLUGINS.artifacts.names())
def test_artifact_conforms(name, contexts):
    artifact = PLUGINS.artifacts.get(name)
    reasons = {}
    for where in ["toy", "toy+caption"]:
        ctx = contexts(where)
        written = check_artifact(artifact, ctx)
        if isinstance(written, str):
            reasons[where] = written
            continue
        assert all(p.is_relative_to(ctx.run_dir / "artifacts" / name) for p in written)
        return
    pytest.skip(f"artifact '{name}' applies to neither toy dataset: {reasons}")


@pytest.mark.parametrize("name", PLUGINS.trackers.names())
def test_tracker_conforms(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tracker = PLUGINS.trackers.get(name)
    if tracker.unavailable():
        pytest.skip(f"tracker '{name}' cannot run here: {tracker.unavailable()}")
    check_tracker(tracker, tmp_path)
    assert any(tmp_path.rglob("*")), "the tracker wrote nothing beside the run"
