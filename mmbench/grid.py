"""The grid of a benchmark: datasets × posteriors × seeds, described by flags, a TOML file or
both (flags win), checked whole and expanded into run specs, then carried out cell by cell by
an executor.

    mmbench run --dataset digits --posteriors moe,poe --seeds 0,1,2
    mmbench run --config grid.toml --seeds 3          # the file's grid, other seeds

A grid file holds the core's settings (:mod:`mmbench.settings`) with the flags' names, and a
table per owner of plugin options::

    dataset = "digits"                 # or a list
    posteriors = ["moe", "poe"]
    seeds = [0, 1, 2]
    epochs = 8
    out = "results/digits/runs"
    [digits]                           # the options of the item named so (`mmbench plugins`)
    partners = 20

``[data_options]`` sets an option of every dataset of the grid (as ``--data-option`` does),
``modalities = M`` every dataset's modality count (as ``--modalities``), and a key an option had
before its owner declared it (its ``aliases``) still reads as that option.
Every setting is checked before any directory is made. Each cell runs under its run
directory's lock (:mod:`mmbench.locks`) after the directory's files were checked
(:mod:`mmbench.integrity`); a cell that crashes or diverges is recorded as failed and the grid
goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import tomllib
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .api import Executor
from .artifacts import resolve_artifacts
from .errors import MMBenchError
from .runner import RunSpec, resolve_estimator, resolve_metrics
from .settings import (ARITHMETIC, CORE, CORE_ALIASES, HPARAMS, MODALITY_COUNT, Assignment, alias, chosen, located,
                       owner, unknown_setting)
from .step import require_splittable
from .tracking import require_available, resolve_trackers

#: grid-file tables that are not owners: the core's hyper-parameters grouped, and options of every dataset
HPARAMS_TABLE, EVERY_DATASET_TABLE = "hparams", "data_options"


# ------------------------------------------------------------------------------ settings
@dataclass
class Layer:
    """The settings one source gave (a grid file, or the command line), not yet checked:
    core settings by name, and plugin options as assignments in the order given. ``where``
    begins the message of an error in a core setting (the file; nothing for the flags)."""

    where: str
    core: dict = field(default_factory=dict)
    assignments: list[Assignment] = field(default_factory=list)


def load_grid_file(path: Path, plugins) -> Layer:
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
    layer = Layer(str(path))

    def setting(key: str, value) -> None:
        name = key.replace("-", "_")
        name = CORE_ALIASES.get(name, name)
        if name in CORE:
            layer.core[name] = value
            return
        if name == MODALITY_COUNT:  # as --modalities: every dataset's
            layer.assignments.append(Assignment(None, name, value, f"{path}: {key}"))
            return
        with located(str(path)):
            target = alias(plugins, name)
            if target is None:
                raise unknown_setting(name, plugins)
        layer.assignments.append(Assignment(*target, value, f"{path}: {key}"))

    for key, value in raw.items():
        if key == HPARAMS_TABLE and isinstance(value, dict):  # the core's keys, grouped
            for k, v in value.items():
                setting(k, v)
        elif key == EVERY_DATASET_TABLE and isinstance(value, dict):
            layer.assignments += [Assignment(None, k.replace("-", "_"), v, f"{path} [{key}]") for k, v in value.items()]
        elif isinstance(value, dict) and key.replace("-", "_") not in CORE:
            layer.assignments += [Assignment(key, k.replace("-", "_"), v, f"{path} [{key}]") for k, v in value.items()]
        else:
            setting(key, value)
    return layer


# ------------------------------------------------------------------------------ the checked grid
@dataclass
class GridJob:
    """Where and how a grid's cells run: what every executor and worker needs besides the spec."""

    out: Path
    data_dir: Path
    cache_dir: Path
    device: str = "auto"
    plugins_dir: str | None = None
    progress: bool = True
    executor: str = ""
    #: the trackers following each cell: {name: the options set}
    trackers: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class Grid:
    """A grid whose every setting was checked: its cells, and where and how they run."""

    cells: list[RunSpec]
    out: Path
    data_dir: Path | None
    device: str
    executor: Executor  # configured
    #: the trackers following each cell: {name: the options set}
    trackers: dict = field(default_factory=dict)


def plan(layers: list[Layer], plugins) -> Grid:
    """The grid that ``layers`` describe (later layers win), every name, option and value
    checked and the results directory found writable, before anything is created."""
    core = {name: option.default for name, option in CORE.items()}
    for layer in layers:
        for name, value in layer.core.items():
            with located(layer.where or f"--{name.replace('_', '-')}"):
                core[name] = CORE[name].parse(value)
    datasets = chosen(plugins.datasets, core["dataset"], "dataset")
    posteriors = chosen(plugins.posteriors, core["posteriors"], "posteriors")
    metric_names = core["metrics"]
    metrics = resolve_metrics(plugins, metric_names)  # unknown names fail here
    artifacts = resolve_artifacts(plugins, core["artifacts"])
    trackers = resolve_trackers(plugins, core["trackers"])
    executor_name = core["executor"] or chosen(plugins.executors, None, "executor")[0].name

    # Plugin options, in the order given; an option of "every dataset" goes to each of the grid's.
    values: dict[str, dict] = {}
    for layer in layers:
        for assignment in layer.assignments:
            with located(assignment.where):
                targets = ([d.name for d in datasets] if assignment.owner is None else [assignment.owner])
                for name in targets:
                    item = (plugins.datasets.get(name) if assignment.owner is None
                            else owner(plugins, name, assignment.name))
                    parsed = item.parse_options({assignment.name: assignment.value})
                    values.setdefault(item.name, {}).update(parsed)

    def configured(item):
        return item.configure(**values.get(item.name, {}))

    executor = configured(plugins.executors.get(executor_name))
    datasets = [configured(d) for d in datasets]
    posteriors = [configured(p) for p in posteriors]
    metrics = [configured(m) for m in metrics]
    artifacts = [configured(a) for a in artifacts]
    trackers = [configured(t) for t in trackers]
    require_available(trackers)  # a package a tracker needs is missing: before anything is made
    metric_options = {m.name: m.changed_options for m in [*metrics, *artifacts] if m.changed_options}
    for posterior in posteriors:
        resolve_estimator(posterior, core["estimator"])  # a posterior without it fails here
        if core["micro_batch"] is not None:
            require_splittable(posterior)

    cells = []
    for dataset in datasets:
        hp = {k: core[k] if core[k] is not None else dataset.defaults.get(k) for k in HPARAMS}
        hp["estimator"] = core["estimator"]
        hp.update({o.name: core[o.name] for o in ARITHMETIC if core[o.name] != o.default})
        missing = [k for k in HPARAMS if hp[k] is None and k != "estimator"]
        if missing:
            raise MMBenchError(f"dataset '{dataset.name}' has no default for {', '.join(missing)}; "
                               f"pass --{missing[0].replace('_', '-')}")
        for posterior in posteriors:
            options = {posterior.name: posterior.changed_options} if posterior.changed_options else {}
            options.update(metric_options)
            for seed in core["seeds"]:
                cells.append(RunSpec(dataset.name, posterior.name, seed, dict(hp), metric_names,
                                     dict(dataset.changed_options), dict(options), core["artifacts"]))
    out = Path(core["out"])
    writable_folder(out, "--out")
    return Grid(cells, out, Path(core["data_dir"]) if core["data_dir"] else None, core["device"], executor,
                {t.name: t.changed_options for t in trackers})


def writable_folder(path: Path, flag: str) -> None:
    """Raise a one-line MMBenchError unless ``path`` is a folder, or one can be made there, that
    this process may write into. Whatever the check makes, it removes."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MMBenchError(f"{flag} {path}: {existing} is a file, not a folder; pass another {flag}")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".mmbench-check-"))
    except OSError as exc:
        raise MMBenchError(f"{flag} {path} cannot be written ({exc.strerror or exc} in {existing}); "
                           f"pass another {flag}") from None


# ------------------------------------------------------------------------------ cells
def label(spec: RunSpec) -> str:
    return f"[{spec.dataset} / {spec.posterior} / seed {spec.seed}]"


def run_cell(spec: RunSpec, job: GridJob, plugins, device, data_cache: dict | None = None,
             wait: bool = True) -> dict | None:
    """One cell under its lock: check the run directory, then train and evaluate (or skip a
    finished run). Returns run.json's contents; None when another runner holds the cell and
    ``wait`` is False. A cell that raises is recorded as failed: the grid goes on."""
    from .integrity import check_run_dir, warn
    from .locks import RunLock
    from .results import atomic_write_json, read_json, utc_now
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
            trackers = [plugins.trackers.get(name).configure(**options) for name, options in job.trackers.items()]
            info = execute(spec, plugins, out=job.out, data_dir=job.data_dir, cache_dir=job.cache_dir,
                           device=device, progress=job.progress, data=data, trackers=trackers)
        except MMBenchError:
            raise
        except Exception as exc:  # one broken cell must not end a grid of hours
            traceback.print_exc(file=sys.stderr)
            info = read_json(run_dir / "run.json") or {"spec": asdict(spec)}
            info.update(status="failed", reason=f"crashed: {type(exc).__name__}: {exc}", finished=utc_now())
            atomic_write_json(run_dir / "run.json", info)
        if info.get("status") != "done":
            print(f"mmbench: run {run_dir} {info.get('status')}: {info.get('reason')}", file=sys.stderr)
        return info
    finally:
        lock.release()


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
        return {"status": "error", "reason": str(exc), "spec": asdict(spec)}


# ------------------------------------------------------------------------------ the whole grid
def run_grid(grid: Grid, plugins, *, plugins_dir: str | None, home: Path, progress: bool = True,
             dry_run: bool = False) -> int:
    """Run the checked grid with its executor, then print its table. Exit status: 0 when every
    cell finished, 1 when one failed (the others still ran)."""
    from .device import resolve_device
    from .leaderboard import fits, render, scan_runs

    if dry_run:
        for spec in grid.cells:
            options = {owner: values for owner, values in {spec.dataset: spec.dataset_options, **spec.options}.items()
                       if values}
            trackers = f"  trackers={', '.join(grid.trackers)}" if grid.trackers else ""
            print(f"{label(spec)} -> {spec.directory(grid.out)}  {spec.hparams}  options={options}{trackers}")
        return 0
    resolve_device(grid.device)  # an unknown or absent device fails before any cell
    executor = grid.executor
    job = GridJob(out=grid.out, data_dir=grid.data_dir or home / "data", cache_dir=home / "cache", device=grid.device,
                  plugins_dir=str(Path(plugins_dir).resolve()) if plugins_dir else None, progress=progress,
                  executor=executor.name, trackers=grid.trackers)
    infos = executor.run(grid.cells, job, plugins)
    errors = [i["reason"] for i in infos if i.get("status") == "error"]
    if errors:
        raise MMBenchError(errors[0])
    wanted = {spec.directory(grid.out) for spec in grid.cells}
    records = [r for r in scan_runs(grid.out) if r.path in wanted]
    wide = render(records, "md", expected=grid.cells, root=grid.out)
    # one row per posterior when it fits the terminal, else one row per metric (piped: COLUMNS or 80)
    print(wide if fits(wide, shutil.get_terminal_size().columns)
          else render(records, "md", expected=grid.cells, transpose=True, root=grid.out))
    return 0 if all(i.get("status") == "done" for i in infos) else 1
