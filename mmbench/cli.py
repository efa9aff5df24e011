"""The ``mmbench`` command line. Each subcommand is a small function; user errors print one
line and exit 2, never a traceback.

The flags of ``run`` are the core's settings (:mod:`mmbench.settings`), one flag each; a
plugin's options are set with ``--set OWNER.NAME=VALUE``, and an option's former names (its
``aliases``) are flags as well, so that older command lines keep working."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .allocator import keep_freed_memory
from .errors import MMBenchError
from .settings import (ARITHMETIC, CORE, CORE_ALIASES, GRID, MODALITY_COUNT, OWNERS, TRAINING, Assignment, aliases,
                       parse_assignment, unknown_setting)

#: the commands that read no plugin (the others load them before their flags are parsed; the
#: leaderboard reads them for datasets renamed since a run and for the published numbers)
WITHOUT_PLUGINS = ()


def _default_home() -> Path:
    return Path(os.environ.get("MMBENCH_HOME", Path.home() / ".cache" / "mmbench"))


# ------------------------------------------------------------------------------ plugin options
class _Given(argparse.Action):
    """Keeps each plugin option given (``--set``, ``--data-option``, an alias flag) in
    ``args.given`` in the order given, for :func:`_assignments` to read once plugins are loaded."""

    def __init__(self, *args, target=None, **kwargs):
        self.target = target
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.given = [*(getattr(namespace, "given", None) or []), (option_string, value, self.target)]


def _assignments(args, plugins) -> tuple[dict, list[Assignment]]:
    """(core settings given as ``--set NAME=VALUE``, plugin option assignments) of the flags."""
    core, assignments = {}, []
    for flag, value, target in getattr(args, "given", None) or []:
        if target is not None:  # an alias flag, or --modalities: (owner or None, option)
            assignments.append(Assignment(*target, value, flag))
        elif flag == "--data-option":
            key, sep, raw = value.partition("=")
            if not sep or not key.strip():
                raise MMBenchError(f"--data-option {value}: expected KEY=VALUE, KEY an option of the grid's datasets")
            assignments.append(Assignment(None, key.strip().replace("-", "_"), raw.strip(), f"--data-option {value}"))
        else:
            parsed = parse_assignment(value)
            if isinstance(parsed, Assignment):
                assignments.append(parsed)
            elif CORE_ALIASES.get(parsed[0], parsed[0]) in CORE:
                core[CORE_ALIASES.get(parsed[0], parsed[0])] = parsed[1]
            else:
                raise MMBenchError(f"--set {value}: {unknown_setting(parsed[0], plugins)}")
    return core, assignments


def _add_plugin_options(parser, plugins,
                        kinds=("datasets", "posteriors", "metrics", "artifacts", "trackers", "executors")) -> None:
    parser.add_argument("--set", action=_Given, metavar="OWNER.NAME=VALUE", dest="given",
                        help=f"an option of {OWNERS}, addressed by that one's name "
                             "(repeatable; `mmbench plugins` lists every option)")
    if plugins is None:
        return
    for alias, targets in sorted(aliases(plugins).items()):
        owner, option = targets[0]
        if len(targets) > 1 or not any(owner in getattr(plugins, kind) for kind in kinds):
            continue
        try:
            parser.add_argument(f"--{alias.replace('_', '-')}", action=_Given, dest="given", target=(owner, option.name),
                                metavar=option.name.upper(), help=f"as --set {owner}.{option.name}=VALUE: {option.help}")
        except argparse.ArgumentError:  # a flag of the core's keeps its meaning
            continue


# ------------------------------------------------------------------------------ run
def cmd_run(args) -> int:
    from .grid import Layer, load_grid_file, plan, run_grid
    from .plugins import get_plugins

    plugins = get_plugins(args.plugins_dir)
    layers = [load_grid_file(Path(args.config), plugins)] if args.config else []
    core, assignments = _assignments(args, plugins)
    flags = {name: getattr(args, name) for name in CORE if getattr(args, name, None) is not None}
    layers.append(Layer("", {**flags, **core}, assignments))
    grid = plan(layers, plugins)  # every setting checked: nothing is created before this
    if args.download and not args.dry_run:
        _download(grid, plugins)
    return run_grid(grid, plugins, plugins_dir=args.plugins_dir, home=_default_home(),
                    progress=not args.quiet, dry_run=args.dry_run)


def _download(grid, plugins) -> None:
    """--download: fetch each dataset of the grid into the data directory once, before any cell
    runs, so that the cells (in this process, pool workers or Ray tasks) only read."""
    data_dir = grid.data_dir or _default_home() / "data"
    fetched = set()
    for spec in grid.cells:
        key = (spec.dataset, tuple(sorted(spec.dataset_options.items())))
        if key not in fetched:
            fetched.add(key)
            print(f"[{spec.dataset}] fetching what is missing into {data_dir}", file=sys.stderr)
            plugins.datasets.get(spec.dataset).configure(**spec.dataset_options).load(data_dir, download=True)


# ------------------------------------------------------------------------------ evaluate
def cmd_evaluate(args) -> int:
    from .device import resolve_device
    from .plugins import get_plugins
    from .reevaluate import reevaluate
    from .settings import located, owner

    plugins = get_plugins(args.plugins_dir)
    core, assignments = _assignments(args, plugins)
    if core:
        raise MMBenchError(f"evaluate takes metrics' options only, not {', '.join(core)}")
    options: dict[str, dict] = {}
    for assignment in assignments:
        with located(assignment.where):
            item = owner(plugins, assignment.owner, assignment.name) if assignment.owner else None
            if item is None or (item.name not in plugins.metrics and item.name not in plugins.artifacts):
                raise MMBenchError("evaluate takes metrics' and artifacts' options only")
            options.setdefault(item.name, {}).update(item.parse_options({assignment.name: assignment.value}))
    data_dir = Path(args.data_dir) if args.data_dir else _default_home() / "data"
    metrics = CORE["metrics"].parse(args.metrics) if args.metrics else None
    artifacts = CORE["artifacts"].parse(args.artifacts) if args.artifacts else None
    info, rows = reevaluate(Path(args.run_dir), plugins, metrics=metrics, options=options, data_dir=data_dir,
                            cache_dir=_default_home() / "cache", device=resolve_device(args.device), artifacts=artifacts)
    for name, reason in sorted(info.get("skipped_metrics", {}).items()):
        print(f"mmbench: skipped {name}: {reason}", file=sys.stderr)
    print(f"{args.run_dir}: {len(rows)} metric values evaluated, metrics.jsonl rewritten")
    for name in artifacts or []:
        if name in info.get("artifacts", {}):
            print(f"{args.run_dir}: artifact {name} written again ({len(info['artifacts'][name])} files)")
        elif name in info.get("artifact_errors", {}) or name in info.get("skipped_artifacts", {}):
            why = info.get("artifact_errors", {}).get(name) or info["skipped_artifacts"][name]
            print(f"mmbench: artifact {name} not written: {why}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ plugins
def cmd_plugins(args) -> int:
    from .plugins import get_plugins

    plugins = get_plugins(args.plugins_dir)
    for p in plugins.plugins:
        prov = p.provenance
        source = f"{prov.distribution} {prov.version or ''}".strip() if prov.distribution else "unknown distribution"
        print(f"{prov.plugin}  ({source})")
        if p.error:
            print(f"    BROKEN: {p.error}")
            continue
        for kind, names in p.registered.items():
            for name in names:
                item = getattr(plugins, kind).get(name)
                print(f"    {'published' if kind == 'published' else kind[:-1]:<9} {name:<16} {_describe(kind, item)}")
                why = item.unavailable() if kind == "trackers" else None
                if why:
                    print(f"{'':<30}not available here: {why}")
                if getattr(item, "by_default", False):
                    print(f"{'':<30}run when a grid names no {kind[:-1]} (by_default)")
                for option in getattr(item, "options", ()):
                    print(f"{'':<30}option {name}.{option.name} = {option.default!r}: {option.help}")
    return 0


def _describe(kind: str, item) -> str:
    if kind == "datasets":
        mods = ", ".join(m.describe() for m in item.modalities)
        defaults = " ".join(f"{k}={v}" for k, v in item.defaults.items())
        return f"{item.description}\n{'':<30}modalities: {mods}\n{'':<30}defaults: {defaults}"
    if kind == "posteriors":
        return f"{item.description} [estimators: {', '.join(item.estimators)}]"
    if kind in ("executors", "artifacts"):
        return item.description
    if kind == "trackers":
        return f"{item.description} (off unless picked: --tracker {item.name})"
    if kind == "published":
        return f"published results in {item.path}"
    arrow = "↑" if item.higher_is_better else "↓"
    return f"{arrow} {item.criterion}: {item.description}"


# ------------------------------------------------------------------------------ leaderboard
def cmd_leaderboard(args) -> int:
    from .leaderboard import render, scan_runs
    from .plugins import get_plugins
    from .published import collect
    from .renames import renamed

    root = Path(args.results)
    if not root.is_dir():
        raise MMBenchError(f"no results directory {root}; run `mmbench run` first or name the folder it wrote")
    plugins = get_plugins(args.plugins_dir)
    records, notes = renamed(scan_runs(root), plugins)  # runs of a renamed dataset under its name today
    published = collect(plugins) if args.published else None
    print(render(records, args.format, provenance=args.provenance, transpose=args.transpose,
                 pairs=args.pairs, published=published, root=root))
    for note in notes:
        print(f"mmbench: {note}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ published
def cmd_published(args) -> int:
    from .plugins import get_plugins
    from .published import collect, render_list

    records = collect(get_plugins(args.plugins_dir), args.dataset)
    if not records:
        where = f" for {args.dataset}" if args.dataset else ""
        print(f"no published numbers{where} (plugins ship them through register_published)")
        return 0
    print(render_list(records, args.format))
    return 0


# ------------------------------------------------------------------------------ parser
def _add_core_flag(parser, option) -> None:
    """A flag of one core setting (and of each of its aliases); its value is checked with the
    setting's declaration later, with the grid file's, so that both fail alike (one line)."""
    flags = ([f"--{option.name.replace('_', '-')}"] + ([f"-{option.name}"] if len(option.name) == 1 else [])
             + [f"--{alias.replace('_', '-')}" for alias in option.aliases])
    parser.add_argument(*flags, dest=option.name, metavar=option.name.upper(), help=option.help)


def build_parser(plugins=None) -> argparse.ArgumentParser:
    """The parser; with ``plugins``, ``run`` and ``evaluate`` also take their options' former
    names as flags."""
    parser = argparse.ArgumentParser(prog="mmbench", description="Benchmark multimodal deep generative models.")
    parser.add_argument("--plugins-dir", help="also load single-file plugins (*.py) from this folder")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate every (dataset, posterior, seed)")
    run.add_argument("--config", metavar="GRID.toml", help="a TOML file describing the grid (flags given as well win)")
    for option in GRID + TRAINING + ARITHMETIC:
        _add_core_flag(run, option)
    _add_plugin_options(run, plugins)
    run.add_argument("--data-option", action=_Given, metavar="KEY=VALUE", dest="given",
                     help="an option of every dataset of the grid (repeatable)")
    run.add_argument("--modalities", action=_Given, dest="given", target=(None, MODALITY_COUNT), metavar="M",
                     help="the modality count, for datasets that take one (as --data-option modalities=M)")
    run.add_argument("--download", action="store_true",
                     help="fetch datasets that are missing from --data-dir (where the dataset can be fetched)")
    run.add_argument("--dry-run", action="store_true", help="list the cells and their directories; run nothing")
    run.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    run.set_defaults(func=cmd_run)

    plugins_cmd = sub.add_parser("plugins", help="list loaded plugins, what they registered and their options")
    plugins_cmd.set_defaults(func=cmd_plugins)

    evaluate = sub.add_parser("evaluate", help="evaluate a finished run again from its checkpoint, without training")
    evaluate.add_argument("run_dir", help="a run directory (the one holding run.json and checkpoint.pt)")
    evaluate.add_argument("--metrics", help="metric families to evaluate again, comma-separated (default: all "
                                            "that apply); other rows are kept")
    evaluate.add_argument("--artifacts", help="artifacts to write again, comma-separated (default: none); "
                                              "run.json's listing of them is replaced")
    _add_plugin_options(evaluate, plugins, kinds=("metrics", "artifacts"))
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    evaluate.add_argument("--data-dir", help="where datasets live (default: $MMBENCH_HOME/data)")
    evaluate.set_defaults(func=cmd_evaluate)

    board = sub.add_parser("leaderboard", help="tables from a results directory")
    board.add_argument("results", nargs="?", default=CORE["out"].default)
    board.add_argument("--format", choices=("md", "csv", "latex"), default="md",
                       help="md (default), csv (long: one row per dataset, posterior and metric) or latex")
    board.add_argument("--provenance", action="store_true",
                       help="end the md table with where the numbers came from, the options that were set and where the time went (per metric)")
    board.add_argument("--transpose", action="store_true",
                       help="one row per metric, one column per posterior (md, latex): readable with many metrics")
    board.add_argument("--pairs", action="store_true",
                       help="keep the columns of modality pairs (coherence_cross[a->b], loglik[m|n], ...), "
                            "left out of md and latex tables by default above three modalities")
    board.add_argument("--published", action="store_true",
                       help="add the published numbers (`mmbench published`) as marked rows where dataset and metric match")
    board.set_defaults(func=cmd_leaderboard)

    published = sub.add_parser("published", help="list the published results the plugins ship, each with its source")
    published.add_argument("--dataset", help="only this dataset's")
    published.add_argument("--format", choices=("md", "csv"), default="md")
    published.set_defaults(func=cmd_published)

    from .cost_command import add_parser as add_cost_parser

    add_cost_parser(sub)

    from .judges_command import add_parser as add_judges_parser

    add_judges_parser(sub, _default_home)
    return parser


def _plugins_for(argv: list[str]):
    """The loaded plugins when the command reads them (each broken one named on stderr), else None."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--plugins-dir")
    peek.add_argument("command", nargs="?")
    known, _ = peek.parse_known_args(argv)
    if known.command in (None, *WITHOUT_PLUGINS):
        return None
    from .plugins import get_plugins

    plugins = get_plugins(known.plugins_dir)
    for error in plugins.errors:
        print(f"mmbench: warning: {error} (left out; MMBENCH_LOAD_PLUGINS can exclude it)", file=sys.stderr)
    return plugins


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    keep_freed_memory()
    try:
        args = build_parser(_plugins_for(argv)).parse_args(argv)
        return args.func(args)
    except MMBenchError as exc:
        print(f"mmbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmbench: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
