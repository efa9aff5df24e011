"""The plugin registry's errors, and plugins found through entry points like any other."""

import textwrap

import pytest

from mmbench.api import Posterior
from mmbench.errors import MMBenchError, PluginError
from mmbench.registry import Provenance, Registry


class _P(Posterior):
    def __init__(self, name):
        self.name = name


def test_unknown_name_suggests_the_close_one_and_lists_all():
    reg = Registry("posteriors", Posterior)
    for n in ("moe", "poe", "moe-tight"):
        reg.add(_P(n), Provenance("x"))
    with pytest.raises(MMBenchError) as err:
        reg.get("moee")
    msg = str(err.value)
    assert "did you mean 'moe'" in msg and "available: moe, moe-tight, poe" in msg


def test_duplicate_names_are_refused_naming_both_plugins():
    reg = Registry("posteriors", Posterior)
    reg.add(_P("moe"), Provenance("first", "mmbench-first", "1.0"))
    with pytest.raises(PluginError) as err:
        reg.add(_P("moe"), Provenance("second", "mmbench-second", "2.0"))
    assert "first" in str(err.value) and "second" in str(err.value)


def test_wrong_type_is_refused():
    reg = Registry("posteriors", Posterior)
    with pytest.raises(PluginError, match="not a mmbench.api.Posterior"):
        reg.add(object(), Provenance("bad"))


def test_standard_plugins_are_loaded_through_entry_points(plugins):
    assert {"moe", "poe", "moe-tight", "is-elbo"} <= set(plugins.posteriors.names())
    assert "digits" in plugins.datasets.names()
    assert plugins.posteriors.provenance("moe").distribution == "mmbench"
    assert not plugins.errors


def _write_plugin_dir(folder, name, body):
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_broken_plugins_are_named_and_the_rest_still_loads(tmp_path):
    from mmbench.plugins import load_plugins

    _write_plugin_dir(tmp_path, "explodes", "raise RuntimeError('boom at import')\n")
    _write_plugin_dir(tmp_path, "misspelt", """
        from mmbench import hookimpl
        @hookimpl
        def register_posterior(register):
            pass
    """)
    _write_plugin_dir(tmp_path, "clash", """
        from mmbench import hookimpl
        from mmbench.api import Posterior
        class Dup(Posterior):
            name = "moe"
        @hookimpl
        def register_posteriors(register):
            register(Dup())
    """)
    loaded = load_plugins(tmp_path)
    errors = "\n".join(loaded.errors)
    assert "explodes" in errors and "boom at import" in errors
    assert "misspelt" in errors and "register_posterior" in errors and "register_posteriors" in errors
    assert "clash" in errors and "'moe' is registered twice" in errors and "plugin 'moe'" in errors
    assert "moe" in loaded.posteriors and "digits" in loaded.datasets


def test_load_filter_env(monkeypatch):
    from mmbench.plugins import load_plugins

    monkeypatch.setenv("MMBENCH_LOAD_PLUGINS", "poe")
    loaded = load_plugins()
    assert loaded.posteriors.names() == ["poe"] and not loaded.datasets.names()
    monkeypatch.setenv("MMBENCH_LOAD_PLUGINS", "")
    # nothing but the core's own executors, which no filter leaves out (`mmbench run` needs one)
    assert [p.provenance.plugin for p in load_plugins().plugins] == ["executors"]
