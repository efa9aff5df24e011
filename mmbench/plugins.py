"""The plugin manager: entry points of the ``mmbench`` group, single-file plugins from a
folder, ``MMBENCH_LOAD_PLUGINS``, and per-plugin error isolation.

Built-in plugins are found exactly like third-party ones: through entry points. A plugin
that fails to import, implements a misspelt hook or raises while registering is reported
by name (with its distribution) and left out; the rest of the suite keeps working.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pluggy

from . import __version__, hookspecs
from .errors import PluginError
from .registry import Provenance, Registry

ENV_FILTER = "MMBENCH_LOAD_PLUGINS"
HOOKS = ("datasets", "posteriors", "metrics", "artifacts", "trackers", "executors", "published")
#: the core's own implementations, registered exactly like a plugin's (and never filtered out)
DEFAULT_PLUGINS = ("mmbench.executors",)


@dataclass
class LoadedPlugin:
    """One plugin as the manager saw it: what it registered, or why it was left out."""

    provenance: Provenance
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in HOOKS})
    error: str | None = None


@dataclass
class Plugins:
    """Everything the loaded plugins registered."""

    datasets: Registry
    posteriors: Registry
    metrics: Registry
    artifacts: Registry
    trackers: Registry
    executors: Registry
    published: Registry
    plugins: list[LoadedPlugin]

    @property
    def errors(self) -> list[str]:
        return [f"{p.provenance}: {p.error}" for p in self.plugins if p.error]


def _allowed():
    """A predicate on a plugin's names (entry point, distribution) from MMBENCH_LOAD_PLUGINS.

    The variable lists entry-point or distribution names, comma-separated: only those load
    (empty: none). A name with a leading ``-`` is left out: ``-foo`` loads all but foo.
    Unset: every plugin loads."""
    value = os.environ.get(ENV_FILTER)
    if value is None:
        return lambda *names: True
    entries = [v.strip() for v in value.split(",") if v.strip()]
    excluded = {e[1:].strip() for e in entries if e.startswith("-")}
    included = {e for e in entries if not e.startswith("-")}

    def wanted(*names) -> bool:
        names = {n for n in names if n}
        if names & excluded:
            return False
        return bool(names & included) if included else bool(excluded)

    return wanted


def _hook_names(module: object) -> list[str]:
    return [n for n in dir(module) if hasattr(getattr(module, n, None), "mmbench_impl")]


def _candidates(plugins_dir: str | os.PathLike | None):
    """Yield (provenance, loader) for every plugin to try, entry points first."""
    allowed = _allowed()
    for module in DEFAULT_PLUGINS:
        yield Provenance(module.rpartition(".")[2], "mmbench", __version__), (lambda m=module: importlib.import_module(m))
    for ep in sorted(entry_points(group="mmbench"), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        if not allowed(ep.name, dist_name):
            continue
        version = dist.version if dist is not None else None
        yield Provenance(ep.name, dist_name, version), ep.load
    if plugins_dir is not None:
        folder = Path(plugins_dir)
        if not folder.is_dir():
            raise PluginError(f"--plugins-dir {folder} is not a folder")
        for path in sorted(folder.glob("*.py")):
            if not allowed(path.stem):
                continue
            yield Provenance(path.stem, f"file {path}"), (lambda p=path: _load_file(p))


def _load_file(path: Path) -> ModuleType:
    name = f"mmbench_dir_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_plugins(plugins_dir: str | os.PathLike | None = None) -> Plugins:
    """Load every plugin and collect what it registers. Never raises for a broken plugin."""
    from .api import Artifact, Dataset, Executor, Metric, Posterior, Tracker  # the base classes the registries check
    from .published import PublishedFile

    pm = pluggy.PluginManager("mmbench")
    pm.add_hookspecs(hookspecs)
    spec_names = {n for n in dir(hookspecs) if n.startswith("register_")}
    registries = {
        "datasets": Registry("datasets", Dataset),
        "posteriors": Registry("posteriors", Posterior),
        "metrics": Registry("metrics", Metric),
        "artifacts": Registry("artifacts", Artifact),
        "trackers": Registry("trackers", Tracker),
        "executors": Registry("executors", Executor),
        "published": Registry("published files", PublishedFile),
    }
    loaded: dict[str, LoadedPlugin] = {}
    for provenance, load in _candidates(plugins_dir):
        record = LoadedPlugin(provenance)
        loaded[provenance.plugin] = record
        try:
            module = load()
        except Exception as exc:  # a broken plugin must not take the suite down
            record.error = f"failed to import: {type(exc).__name__}: {exc}"
            continue
        unknown = [n for n in _hook_names(module) if n not in spec_names]
        if unknown:
            record.error = (
                f"implements unknown hook(s) {', '.join(unknown)}; "
                f"the hooks are {', '.join(sorted(spec_names))}"
            )
            continue
        try:
            pm.register(module, name=provenance.plugin)
        except Exception as exc:
            record.error = f"could not be registered: {exc}"
    pm.check_pending()  # unreachable for misspelt hooks (filtered above); guards the rest

    for kind in HOOKS:
        registry = registries[kind]
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            record = loaded[impl.plugin_name]
            if record.error:
                continue
            try:
                returned = impl.function(register=_register_into(registry, record, kind))
                if returned is not None:  # e.g. `return [MyPosterior()]`: it would register nothing
                    record.error = (f"register_{kind} returned a {type(returned).__name__}; a hook calls "
                                    f"register(item) for each item and returns nothing")
            except PluginError as exc:
                record.error = str(exc)
            except Exception as exc:
                record.error = f"raised in register_{kind}: {type(exc).__name__}: {exc}"
    return Plugins(**registries, plugins=list(loaded.values()))


def _register_into(registry: Registry, record: LoadedPlugin, kind: str):
    def register(item) -> None:
        registry.add(item, record.provenance)
        record.registered[kind].append(item.name)

    return register


_cache: dict[str | None, Plugins] = {}


def get_plugins(plugins_dir: str | os.PathLike | None = None) -> Plugins:
    """The loaded plugins, loaded once per process (lazily: importing mmbench loads none)."""
    key = str(plugins_dir) if plugins_dir is not None else None
    if key not in _cache:
        _cache[key] = load_plugins(plugins_dir)
    return _cache[key]

