"""The grid of a benchmark: datasets × posteriors × seeds, described by flags, a TOML file or
both (flags win), expanded into run specs, and carried out cell by cell by an executor.

    mmbench run --dataset digits --posteriors moe,poe --seeds 0,1,2
    mmbench run --config grid.toml --seeds 3          # the file's grid, other seeds

A grid file holds the same settings as the flags, with underscores::

    dataset = "digits"                 # or a list
    posteriors = ["moe", "moe-tight", "is-elbo", "poe"]
    seeds = [0, 1, 2]
    epochs = 8
    K = 2
    metrics = ["coherence_cross", "coherence_joint", "latent_acc"]
    out = "results/digits/runs"
    [data_options]
    partners = 20

Each cell runs under its run directory's lock (:mod:`mmbench.locks`) after the directory's
files were checked (:mod:`mmbench.integrity`); a cell that crashes or diverges is recorded as
failed and the grid goes on.
"""

from __future__ import annotations

import difflib
import re
import sys
import tomllib
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import MMBenchError
from .runner import EVAL_OPTIONS, HPARAMS, RunSpec

DEFAULTS = {"dataset": ["digits"], "posteriors": ["moe", "poe"], "seeds": [0], "metrics": None,
            "out": "results/runs", "device": "auto", "executor": "local"}

# setting -> (kind, example); the kinds are checked in _coerce
_KINDS = {
    "dataset": ("names", '"digits" or ["digits", "polymnist"]'),
    "posteriors": ("names", '["moe", "poe"]'),
    "metrics": ("names", '["coherence_cross"]'),
    "seeds": ("ints", "[0, 1, 2]"),
    "modalities": ("count", "5"),
    "data_options": ("table", "{ partners = 20 }"),
    "latent_dim": ("count", "20"), "K": ("count", "2"), "epochs": ("count", "8"),
    "batch_size": ("count", "128"), "lr": ("positive", "1e-3"), "estimator": ("name", '"dreg"'),
    "eval_items": ("count", "1000"), "loglik_samples": ("count", "1000"), "loglik_items": ("count", "100"),
    "out": ("name", '"results/runs"'), "data_dir": ("name", '"data"'), "device": ("name", '"cpu"'),
    "executor": ("name", '"ray"'), "address": ("name", '"ray://head:10001"'), "workers": ("count", "2"),
    "cpus_per_cell": ("positive", "1"), "gpus_per_cell": ("nonnegative", "1"),
}
SETTINGS = tuple(_KINDS)


# ------------------------------------------------------------------------------ settings
def load_grid_file(path: Path) -> dict:
    """The settings of a TOML grid file; one readable line (file and line) when malformed."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MMBenchError(f"grid file {path} does not exist") from None
    except UnicodeDecodeError:
        raise MMBenchError(f"{path}: not a text file (TOML expected)") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if where:
            message = message[:where.start()].strip()
            raise MMBenchError(f"{path} line {where[1]}, column {where[2]}: invalid TOML: {message}") from None
        raise MMBenchError(f"{path}: invalid TOML: {message}") from None
    settings = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name == "hparams" and isinstance(value, dict):  # [hparams] table: the same keys, grouped
            settings.update({k.replace("-", "_"): v for k, v in value.items()})
            continue
        settings[name] = value
    for name in list(settings):
        if name not in _KINDS:
            close = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise MMBenchError(f"{path}: unknown setting '{name}'; {hint}known: {', '.join(SETTINGS)}")
        settings[name] = _coerce(name, settings[name], path)
    return settings


def _coerce(name: str, value, path: Path):
    kind, example = _KINDS[name]
    bad = MMBenchError(f"{path}: '{name}' must be {_KIND_WORDS[kind]}, e.g. {name} = {example} (got {value!r})")
    if kind == "names":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise bad
        return [v.strip() for v in items]
    if kind == "ints":
        items = [value] if isinstance(value, int) else value
        if not isinstance(items, list) or not items or not all(type(v) is int for v in items):
            raise bad
        return items
    if kind == "count":
        if type(value) is not int or value < 1:
            raise bad
        return value
    if kind in ("positive", "nonnegative"):
        if type(value) not in (int, float) or not (value > 0 or (kind == "nonnegative" and value == 0)):
            raise bad
        return value
    if kind == "table":
        if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            raise bad
        # as the flags give them (--data-option partners=20), so both spell the same run
        return {k.replace("-", "_"): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if not isinstance(value, str) or not value:
        raise bad
    return value


_KIND_WORDS = {"names": "a name or a list of names", "ints": "a list of integers", "count": "a positive integer",
               "positive": "a positive number", "nonnegative": "a number >= 0", "table": "a table of values",
               "name": "a string"}


def resolve_settings(flags: dict, config: Path | None = None) -> dict:
    """Defaults, then the grid file, then every flag the user gave (None: not given)."""
    settings = dict(DEFAULTS)
    from_file = load_grid_file(config) if config else {}
    settings.update(from_file)
    given = {k: v for k, v in flags.items() if v is not None and k in _KINDS}
    if "data_options" in given:
        given["data_options"] = {**from_file.get("data_options", {}), **given["data_options"]}
    settings.update(given)
    settings.setdefault("data_options", {})
    return settings


# ------------------------------------------------------------------------------ cells
@dataclass
class GridJob:
    """Where and how a grid's cells run: what every executor and worker needs besides the spec."""

    out: Path
    data_dir: Path
    cache_dir: Path
    device: str = "auto"
    plugins_dir: str | None = None
    progress: bool = True
    executor: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_cell: float = 1
    gpus_per_cell: float | None = None  # None: 1 where the cluster has GPUs, else 0
    extra: dict = field(default_factory=dict)


def expand(settings: dict, plugins) -> list[RunSpec]:
    """Every cell of the grid, each name resolved (and each typo refused) before any work."""
    options = dict(settings.get("data_options") or {})
    if settings.get("modalities") is not None:
        options["modalities"] = settings["modalities"]
    datasets = [plugins.datasets.get(d).configure(**options) for d in settings["dataset"]]
    posteriors = [plugins.posteriors.get(p) for p in settings["posteriors"]]
    for m in settings.get("metrics") or []:
        plugins.metrics.get(m)
    cells = []
    for dataset in datasets:
        hp = {k: settings.get(k) if settings.get(k) is not None else dataset.defaults.get(k) for k in HPARAMS}
        hp["estimator"] = settings.get("estimator")
        hp.update({k: settings.get(k) for k in EVAL_OPTIONS})
        missing = [k for k in HPARAMS if hp[k] is None and k != "estimator"]
        if missing:
            raise MMBenchError(f"dataset '{dataset.name}' has no default for {', '.join(missing)}; "
                               f"pass --{missing[0].replace('_', '-')}")
        for posterior in posteriors:
            for seed in settings["seeds"]:
                cells.append(RunSpec(dataset.name, posterior.name, seed, dict(hp), settings.get("metrics"), dict(options)))
    return cells


def label(spec: RunSpec) -> str:
    return f"[{spec.dataset} / {spec.posterior} / seed {spec.seed}]"


def run_cell(spec: RunSpec, job: GridJob, plugins, device, data_cache: dict | None = None,
             wait: bool = True) -> dict | None:
    """One cell under its lock: check the run directory, then train and evaluate (or skip a
    finished run). Returns run.json's contents; None when another runner holds the cell and
    ``wait`` is False. A cell that raises is recorded as failed: the grid goes on."""
    from .integrity import check_run_dir, warn
    from .locks import RunLock
    from .results import atomic_write_json, read_json
    from .runner import execute

    run_dir = spec.directory(job.out)
    # Data first: a dataset whose files are missing fails here, before any run directory exists.
    data = None
    if data_cache is not None and (read_json(run_dir / "run.json") or {}).get("status") != "done":
        key = (spec.dataset, tuple(sorted(spec.dataset_options.items())))
        if key not in data_cache:
            dataset = plugins.datasets.get(spec.dataset).configure(**spec.dataset_options)
            data_cache.clear()  # one dataset in memory at a time
            data_cache[key] = dataset.load(job.data_dir).to(device)
        data = data_cache[key]
    lock = RunLock(run_dir)
    if not lock.acquire(wait=False):
        if not wait:
            print(f"{label(spec)} {run_dir} is being run by {lock.holder}; coming back to it at the end", file=sys.stderr)
            return None
        print(f"{label(spec)} waiting for {lock.holder}, which is running {run_dir}", file=sys.stderr)
        lock.acquire(wait=True)
    try:
        if lock.stale:
            warn(f"{run_dir} was left locked by {lock.stale}, which ended without finishing it; taking it over")
        print(f"{label(spec)} -> {run_dir}", file=sys.stderr)
        check_run_dir(run_dir)
        try:
            info = execute(spec, plugins, out=job.out, data_dir=job.data_dir, cache_dir=job.cache_dir,
                           device=device, progress=job.progress, data=data)
        except MMBenchError:
            raise
        except Exception as exc:  # one broken cell must not end a grid of hours
            traceback.print_exc(file=sys.stderr)
            info = read_json(run_dir / "run.json") or {"spec": _asdict(spec)}
            info.update(status="failed", reason=f"crashed: {type(exc).__name__}: {exc}",
                        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            atomic_write_json(run_dir / "run.json", info)
        if info.get("status") != "done":
            print(f"mmbench: run {run_dir} {info.get('status')}: {info.get('reason')}", file=sys.stderr)
        return info
    finally:
        lock.release()


def _asdict(spec: RunSpec) -> dict:
    from dataclasses import asdict

    return asdict(spec)


def run_in_worker(spec: RunSpec, job: GridJob, device_name: str | None = None) -> dict:
    """A cell in a fresh process (a pool worker or a Ray task): plugins and device of its own.
    A user error comes back as a record with status 'error' rather than an exception."""
    from .allocator import keep_freed_memory
    from .device import resolve_device
    from .plugins import get_plugins

    keep_freed_memory()
    try:
        plugins = get_plugins(job.plugins_dir)
        return run_cell(spec, job, plugins, resolve_device(device_name or job.device), data_cache={}, wait=True)
    except MMBenchError as exc:
        return {"status": "error", "reason": str(exc), "spec": _asdict(spec)}


# ------------------------------------------------------------------------------ the whole grid
def run_grid(settings: dict, plugins, *, plugins_dir: str | None, home: Path, progress: bool = True,
             dry_run: bool = False) -> int:
    """Expand and run the grid with the chosen executor, then print its table. Exit status:
    0 when every cell finished, 1 when one failed (the others still ran)."""
    from .leaderboard import render, scan_runs

    cells = expand(settings, plugins)
    out = Path(settings["out"])
    if dry_run:
        for spec in cells:
            print(f"{label(spec)} -> {spec.directory(out)}  {spec.hparams}  options={spec.dataset_options}")
        return 0
    executor = plugins.executors.get(settings["executor"])
    job = GridJob(out=out, data_dir=Path(settings.get("data_dir") or home / "data"), cache_dir=home / "cache",
                  device=settings["device"], plugins_dir=str(Path(plugins_dir).resolve()) if plugins_dir else None,
                  progress=progress, executor=executor.name, address=settings.get("address"),
                  workers=settings.get("workers"), cpus_per_cell=settings.get("cpus_per_cell") or 1,
                  gpus_per_cell=settings.get("gpus_per_cell"))
    infos = executor.run(cells, job, plugins)
    errors = [i["reason"] for i in infos if i.get("status") == "error"]
    if errors:
        raise MMBenchError(errors[0])
    wanted = {spec.directory(out) for spec in cells}
    records = [r for r in scan_runs(out) if r.path in wanted]
    print(render(records, "md", expected=cells))
    return 0 if all(i.get("status") == "done" for i in infos) else 1


def flags_of(args) -> dict:
    """The grid settings the user gave as flags (None where a flag was left out)."""
    flags = {k: getattr(args, k, None) for k in SETTINGS}
    if getattr(args, "data_option", None):
        flags["data_options"] = dict(args.data_option)
    return flags

