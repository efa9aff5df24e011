"""The ``mmbench`` command line. Each subcommand is a small function; user errors print one
line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .allocator import keep_freed_memory
from .errors import MMBenchError

DEFAULT_OUT = Path("results/runs")


def _default_home() -> Path:
    return Path(os.environ.get("MMBENCH_HOME", Path.home() / ".cache" / "mmbench"))


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in _comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, e.g. 0,1,2 (got '{text}')") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key.strip().replace("-", "_"), value.strip()


def _load(args):
    from .plugins import get_plugins

    plugins = get_plugins(getattr(args, "plugins_dir", None))
    for error in plugins.errors:
        print(f"mmbench: warning: {error} (left out; MMBENCH_LOAD_PLUGINS can exclude it)", file=sys.stderr)
    return plugins


# ------------------------------------------------------------------------------ run
def cmd_run(args) -> int:
    from .grid import flags_of, resolve_settings, run_grid

    settings = resolve_settings(flags_of(args), Path(args.config) if args.config else None)
    plugins = _load(args)
    if args.download and not args.dry_run:
        _download(settings, plugins)
    return run_grid(settings, plugins, plugins_dir=args.plugins_dir, home=_default_home(),
                    progress=not args.quiet, dry_run=args.dry_run)


def _download(settings, plugins) -> None:
    """--download: fetch each dataset of the grid into the data directory once, before any cell
    runs, so that the cells (in this process, pool workers or Ray tasks) only read."""
    from .grid import expand

    data_dir = Path(settings.get("data_dir") or _default_home() / "data")
    fetched = set()
    for spec in expand(settings, plugins):
        key = (spec.dataset, tuple(sorted(spec.dataset_options.items())))
        if key not in fetched:
            fetched.add(key)
            print(f"[{spec.dataset}] fetching what is missing into {data_dir}", file=sys.stderr)
            plugins.datasets.get(spec.dataset).configure(**spec.dataset_options).load(data_dir, download=True)


# ------------------------------------------------------------------------------ evaluate
def cmd_evaluate(args) -> int:
    from .device import resolve_device
    from .reevaluate import reevaluate

    plugins = _load(args)
    settings = {k: getattr(args, k) for k in ("loglik_samples", "loglik_items") if getattr(args, k) is not None}
    data_dir = Path(args.data_dir) if args.data_dir else _default_home() / "data"
    info, rows = reevaluate(Path(args.run_dir), plugins, metrics=args.metrics, settings=settings,
                            data_dir=data_dir, cache_dir=_default_home() / "cache", device=resolve_device(args.device))
    for name, reason in sorted(info.get("skipped_metrics", {}).items()):
        print(f"mmbench: skipped {name}: {reason}", file=sys.stderr)
    print(f"{args.run_dir}: {len(rows)} metric values evaluated, metrics.jsonl rewritten")
    return 0


def _add_loglik_options(parser) -> None:
    parser.add_argument("--loglik-samples", type=_positive_int,
                        help="importance samples per log-likelihood estimate (default: 1000, as MMVAE Table 3)")
    parser.add_argument("--loglik-items", type=_positive_int,
                        help="fixed test pairs the log-likelihoods are estimated on (default: 100)")


# ------------------------------------------------------------------------------ plugins
def cmd_plugins(args) -> int:
    plugins = _load(args)
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
                print(f"    {kind[:-1]:<9} {name:<16} {_describe(kind, item)}")
    return 0


def _describe(kind: str, item) -> str:
    if kind == "datasets":
        mods = ", ".join(m.describe() for m in item.modalities)
        defaults = " ".join(f"{k}={v}" for k, v in item.defaults.items())
        return f"{item.description}\n{'':<30}modalities: {mods}\n{'':<30}defaults: {defaults}"
    if kind == "posteriors":
        return f"{item.description} [estimators: {', '.join(item.estimators)}]"
    if kind == "executors":
        return item.description
    arrow = "↑" if item.higher_is_better else "↓"
    return f"{arrow} {item.criterion}: {item.description}"


# ------------------------------------------------------------------------------ leaderboard
def cmd_leaderboard(args) -> int:
    from .leaderboard import render, scan_runs

    root = Path(args.results)
    if not root.is_dir():
        raise MMBenchError(f"no results directory {root}; run `mmbench run` first or name the folder it wrote")
    print(render(scan_runs(root), args.format, provenance=args.provenance, transpose=args.transpose,
                 pairs=args.pairs))
    return 0


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmbench", description="Benchmark multimodal deep generative models.")
    parser.add_argument("--plugins-dir", help="also load single-file plugins (*.py) from this folder")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate every (dataset, posterior, seed)")
    run.add_argument("--config", metavar="GRID.toml", help="a TOML file describing the grid (flags given as well win)")
    run.add_argument("--dataset", type=_comma_list, help="dataset name(s), comma-separated (default: digits)")
    run.add_argument("--posteriors", type=_comma_list, help="e.g. moe,poe (default: moe,poe)")
    run.add_argument("--data-option", type=_option, action="append", metavar="KEY=VALUE",
                     help="a dataset option, e.g. partners=20 for digits (repeatable)")
    run.add_argument("--modalities", type=_positive_int, help="modality count, for datasets that take one")
    run.add_argument("--seeds", type=_seeds, help="e.g. 0,1,2 (default: 0)")
    run.add_argument("--metrics", type=_comma_list, help="metric families (default: all that apply)")
    run.add_argument("--epochs", type=_positive_int)
    run.add_argument("--K", "-K", type=_positive_int, help="importance samples per expert")
    run.add_argument("--batch-size", type=_positive_int)
    run.add_argument("--latent-dim", type=_positive_int)
    run.add_argument("--lr", type=_positive_float)
    run.add_argument("--estimator", help="gradient estimator: dreg or iwae for the IWAE-type bounds")
    run.add_argument("--eval-items", type=_positive_int, help="test pairs used by cross coherence (default: all)")
    _add_loglik_options(run)
    run.add_argument("--device", help="auto (CUDA when present; the default), cpu, cuda, cuda:N")
    run.add_argument("--out", help=f"results directory (default: {DEFAULT_OUT})")
    run.add_argument("--data-dir", help="where datasets live (default: $MMBENCH_HOME/data, ~/.cache/mmbench/data)")
    run.add_argument("--download", action="store_true",
                     help="fetch datasets that are missing from --data-dir (where the dataset can be fetched)")
    run.add_argument("--executor", help="how cells run: local (the default) or ray; `mmbench plugins` lists them")
    run.add_argument("--address", help="the Ray cluster to join (default: start a local one)")
    run.add_argument("--workers", type=_positive_int, help="local worker processes (default: one per GPU when several, else 1)")
    run.add_argument("--cpus-per-cell", type=_positive_float, help="CPUs a Ray task asks for (default: 1)")
    run.add_argument("--gpus-per-cell", type=float, help="GPUs a Ray task asks for (default: 1 where the cluster has GPUs)")
    run.add_argument("--dry-run", action="store_true", help="list the cells and their directories; run nothing")
    run.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser("plugins", help="list loaded plugins and what they registered")
    plugins.set_defaults(func=cmd_plugins)

    evaluate = sub.add_parser("evaluate", help="evaluate a finished run again from its checkpoint, without training")
    evaluate.add_argument("run_dir", help="a run directory (the one holding run.json and checkpoint.pt)")
    evaluate.add_argument("--metrics", type=_comma_list, default=None,
                          help="metric families to evaluate again (default: all that apply); other rows are kept")
    _add_loglik_options(evaluate)
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    evaluate.add_argument("--data-dir", help="where datasets live (default: $MMBENCH_HOME/data)")
    evaluate.set_defaults(func=cmd_evaluate)

    board = sub.add_parser("leaderboard", help="tables from a results directory")
    board.add_argument("results", nargs="?", default=str(DEFAULT_OUT))
    board.add_argument("--format", choices=("md", "csv", "latex"), default="md",
                       help="md (default), csv (long: one row per dataset, posterior and metric) or latex")
    board.add_argument("--provenance", action="store_true",
                       help="end the md table with where the numbers came from and where the time went (per metric)")
    board.add_argument("--transpose", action="store_true",
                       help="one row per metric, one column per posterior (md, latex): readable with many metrics")
    board.add_argument("--pairs", action="store_true",
                       help="keep the columns of modality pairs (coherence_cross[a->b], loglik[m|n], ...), "
                            "left out of md and latex tables by default above three modalities")
    board.set_defaults(func=cmd_leaderboard)

    from .cost_command import add_parser as add_cost_parser

    add_cost_parser(sub, _positive_int, _comma_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return args.func(args)
    except MMBenchError as exc:
        print(f"mmbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmbench: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
