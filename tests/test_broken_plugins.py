"""A plugin that breaks — at load time or during a run — is named with its distribution, the
rest of the suite keeps working, and MMBENCH_LOAD_PLUGINS can leave it out."""

import json
import textwrap

from conftest import run_cli

from mmbench.plugins import load_plugins

#: tiny models gain nothing from a second thread; on a busy machine its spin-waiting costs plenty
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
PLUGINS = {
    # a small real dataset, so that a whole run takes seconds
    "toyset": """
        from mmbench import hookimpl
        from mmbench.testing import ToyDataset

        @hookimpl
        def register_datasets(register):
            register(ToyDataset())
    """,
    "boom": """
        from mmbench import hookimpl
        from mmbench.api import Posterior
        from mmbench.distributions import DiagonalNormal

        class Boom(Posterior):
            name = "boom"
            description = "an objective that raises"
            family = DiagonalNormal()

            def decoder_passes(self, num_modalities):
                return num_modalities

            def objective(self, model, xs, K, estimator):
                raise RuntimeError("objective exploded")

        @hookimpl
        def register_posteriors(register):
            register(Boom())
    """,
    "explodes": """
        from mmbench import hookimpl
        from mmbench.api import Metric

        class Explodes(Metric):
            name = "explodes"
            criterion = "smoke"
            unit = "count"
            higher_is_better = True
            description = "a metric that raises"

            def evaluate(self, ctx):
                raise ValueError("metric exploded")

        @hookimpl
        def register_metrics(register):
            register(Explodes())
    """,
    "wrongtype": """
        from mmbench import hookimpl

        @hookimpl
        def register_posteriors(register):
            register(object())
    """,
    "returns": """
        from mmbench import hookimpl
        from mmbench.api import Metric

        class Returned(Metric):
            name = "returned"

        @hookimpl
        def register_metrics(register):
            return [Returned()]
    """,
}


def _plugins_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, body in PLUGINS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return folder


def test_wrong_types_and_returned_values_are_reported_by_name(tmp_path):
    loaded = load_plugins(_plugins_dir(tmp_path))
    errors = {p.provenance.plugin: p.error for p in loaded.plugins if p.error}
    assert set(errors) == {"wrongtype", "returns"}, errors
    assert "registered <object object" in errors["wrongtype"] and "not a mmbench.api.Posterior" in errors["wrongtype"]
    assert "register_metrics returned a list" in errors["returns"] and "register(item)" in errors["returns"]
    assert "file " in str(next(p.provenance for p in loaded.plugins if p.provenance.plugin == "wrongtype"))
    assert {"boom", "moe", "poe"} <= set(loaded.posteriors.names()) and "returned" not in loaded.metrics


def test_a_plugin_that_raises_during_a_run_is_named_and_the_rest_runs(tmp_path):
    folder = _plugins_dir(tmp_path)
    out = tmp_path / "runs"
    proc = run_cli("--plugins-dir", str(folder), "run", "--dataset", "toy", "--posteriors", "boom,poe",
                   "--metrics", "latent_acc,explodes", "--quiet", "--out", str(out), env=ONE_THREAD)
    assert proc.returncode == 1, proc.stderr  # one cell failed; the other finished
    boom = json.loads((out / "toy" / "boom" / "seed-0" / "run.json").read_text())
    assert boom["status"] == "failed"
    assert "objective exploded" in boom["reason"] and "posterior 'boom' of plugin 'boom' (file " in boom["reason"]
    assert "boom.py" in boom["reason"]

    poe = out / "toy" / "poe" / "seed-0"
    info = json.loads((poe / "run.json").read_text())
    assert info["status"] == "done"
    assert "metric exploded" in info["skipped_metrics"]["explodes"]
    assert "metric 'explodes' of plugin 'explodes'" in info["skipped_metrics"]["explodes"]
    rows = [json.loads(line) for line in (poe / "metrics.jsonl").read_text().splitlines()]
    assert {"latent_acc[rot0]", "latent_acc[rot90]", "latent_acc[joint]"} <= {r["metric"] for r in rows}
    assert "metric 'explodes' of plugin 'explodes'" in proc.stderr and "MMBENCH_LOAD_PLUGINS=-explodes" in proc.stderr
    assert "BROKEN" not in proc.stdout


def test_the_load_filter_leaves_a_broken_plugin_out(tmp_path):
    folder = _plugins_dir(tmp_path)
    listed = run_cli("--plugins-dir", str(folder), "plugins")
    assert listed.returncode == 0
    assert "wrongtype  (file " in listed.stdout and "BROKEN: plugin 'wrongtype'" in listed.stdout
    assert "plugin 'wrongtype'" in listed.stderr  # and warned about on every command

    quiet = run_cli("--plugins-dir", str(folder), "plugins", env={"MMBENCH_LOAD_PLUGINS": "-wrongtype,-returns"})
    assert quiet.returncode == 0 and "BROKEN" not in quiet.stdout and "wrongtype" not in quiet.stderr
    assert "boom  (file " in quiet.stdout and "moe  (mmbench " in quiet.stdout  # everything else still loads
