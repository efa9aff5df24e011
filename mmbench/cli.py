"""The ``mmbench`` command line. Each subcommand is a small function; user errors print one
line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    from .device import resolve_device
    from .results import comparison_table, find_runs
    from .runner import HPARAMS, RunSpec, execute

    plugins = _load(args)
    device = resolve_device(args.device)
    # Resolve every name before any work, so a typo costs nothing.
    options = dict(args.data_option or [])
    if args.modalities is not None:
        options["modalities"] = args.modalities
    datasets = [plugins.datasets.get(d).configure(**options) for d in args.dataset]
    posteriors = [plugins.posteriors.get(p) for p in args.posteriors]
    if args.metrics:
        for m in args.metrics:
            plugins.metrics.get(m)
    data_dir = Path(args.data_dir) if args.data_dir else _default_home() / "data"
    cache_dir = _default_home() / "cache"
    out = Path(args.out)
    finished = []
    for dataset in datasets:
        data = None
        for posterior in posteriors:
            for seed in args.seeds:
                hp = {k: getattr(args, k) for k in HPARAMS}
                hp = {k: (dataset.defaults.get(k) if v is None and k != "estimator" else v) for k, v in hp.items()}
                hp["eval_items"] = args.eval_items
                missing = [k for k in HPARAMS if hp[k] is None and k != "estimator"]
                if missing:
                    raise MMBenchError(f"dataset '{dataset.name}' has no default for {', '.join(missing)}; pass --{missing[0].replace('_', '-')}")
                spec = RunSpec(dataset.name, posterior.name, seed, hp, args.metrics, options)
                run_dir = spec.directory(out)
                print(f"[{dataset.name} / {posterior.name} / seed {seed}] -> {run_dir}", file=sys.stderr)
                if data is None:
                    data = dataset.load(data_dir).to(device)
                info = execute(spec, plugins, out=out, data_dir=data_dir, cache_dir=cache_dir, device=device,
                               progress=not args.quiet, data=data)
                if info["status"] != "done":
                    print(f"mmbench: run {run_dir} {info['status']}: {info.get('reason')}", file=sys.stderr)
                finished.append(run_dir)
    runs = [r for r in find_runs(out) if r.path in set(finished) and r.status == "done"]
    print(comparison_table(runs))
    return 0 if all((d / "metrics.jsonl").exists() for d in finished) else 1


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
    arrow = "↑" if item.higher_is_better else "↓"
    return f"{arrow} {item.criterion}: {item.description}"


# ------------------------------------------------------------------------------ leaderboard
def cmd_leaderboard(args) -> int:
    from .results import comparison_table, find_runs

    root = Path(args.results)
    if not root.is_dir():
        raise MMBenchError(f"no results directory {root}; run `mmbench run` first or name the folder it wrote")
    runs = [r for r in find_runs(root) if r.status == "done"]
    print(comparison_table(runs))
    return 0


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmbench", description="Benchmark multimodal deep generative models.")
    parser.add_argument("--plugins-dir", help="also load single-file plugins (*.py) from this folder")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate every (dataset, posterior, seed)")
    run.add_argument("--dataset", type=_comma_list, default=["digits"], help="dataset name(s), comma-separated (default: digits)")
    run.add_argument("--posteriors", type=_comma_list, default=["moe", "poe"], help="e.g. moe,poe")
    run.add_argument("--data-option", type=_option, action="append", metavar="KEY=VALUE",
                     help="a dataset option, e.g. partners=20 for digits (repeatable)")
    run.add_argument("--modalities", type=_positive_int, help="modality count, for datasets that take one")
    run.add_argument("--seeds", type=_seeds, default=[0], help="e.g. 0,1,2")
    run.add_argument("--metrics", type=_comma_list, default=None, help="metric families (default: all that apply)")
    run.add_argument("--epochs", type=_positive_int)
    run.add_argument("--K", "-K", type=_positive_int, help="importance samples per expert")
    run.add_argument("--batch-size", type=_positive_int)
    run.add_argument("--latent-dim", type=_positive_int)
    run.add_argument("--lr", type=_positive_float)
    run.add_argument("--estimator", help="gradient estimator: dreg or iwae for the IWAE-type bounds")
    run.add_argument("--eval-items", type=_positive_int, help="test pairs used by cross coherence (default: all)")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    run.add_argument("--out", default=str(DEFAULT_OUT), help=f"results directory (default: {DEFAULT_OUT})")
    run.add_argument("--data-dir", help="where datasets live (default: $MMBENCH_HOME/data, ~/.cache/mmbench/data)")
    run.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser("plugins", help="list loaded plugins and what they registered")
    plugins.set_defaults(func=cmd_plugins)

    board = sub.add_parser("leaderboard", help="tables from a results directory")
    board.add_argument("results", nargs="?", default=str(DEFAULT_OUT))
    board.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
