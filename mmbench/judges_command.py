"""``mmbench judges export DIR`` / ``mmbench judges import DIR``: the coherence judges as files
(mmbench.judge_files does the work)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub, home) -> None:
    """``home()``: the MMBENCH_HOME folder (judges are kept in its cache/, data in its data/)."""
    judges = sub.add_parser("judges", help="export or import the coherence judges (files with content hashes)")
    verbs = judges.add_subparsers(dest="verb", required=True)
    export = verbs.add_parser("export", help="write a dataset's judges (trained first where missing) and judges.json to DIR")
    export.add_argument("dir")
    export.add_argument("--dataset", default="digits", help="whose judges (default: digits)")
    export.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the dataset (repeatable), as `mmbench run` takes it")
    export.add_argument("--data-dir", help="where datasets live (default: $MMBENCH_HOME/data)")
    export.add_argument("--device", default="auto", help="where missing judges train: auto (CUDA when present), cpu, cuda:N")
    export.set_defaults(func=lambda args: export_command(args, home()))
    load = verbs.add_parser("import", help="check DIR's judges against judges.json and use them from now on")
    load.add_argument("dir")
    load.set_defaults(func=lambda args: import_command(args, home()))


def export_command(args, home: Path) -> int:
    from .device import resolve_device
    from .errors import MMBenchError
    from .judge_files import export_judges
    from .plugins import get_plugins

    values = {}
    for given in args.data_option:
        key, sep, value = given.partition("=")
        if not sep or not key.strip():
            raise MMBenchError(f"--data-option {given}: expected KEY=VALUE, KEY an option of dataset '{args.dataset}'")
        values[key.strip().replace("-", "_")] = value.strip()
    dataset = get_plugins(args.plugins_dir).datasets.get(args.dataset).configure(**values)
    data_dir = Path(args.data_dir) if args.data_dir else home / "data"
    data = dataset.load(data_dir).to(resolve_device(args.device))
    for e in export_judges(dataset, data, home / "cache", Path(args.dir)):
        print(f"{e['file']}  {e['family']:<5} {e['modality']:<10} test accuracy {e['test_acc']:.3f}  sha256 {e['sha256'][:16]}")
    print(f"wrote {args.dir}/judges.json")
    return 0


def import_command(args, home: Path) -> int:
    from .judge_files import import_judges

    entries = import_judges(Path(args.dir), home / "cache")
    for e in entries:
        print(f"{e['file']}  {e['family']:<5} {e['modality']:<10} sha256 {e['sha256'][:16]}  checked")
    print(f"{len(entries)} judges imported into {home / 'cache' / 'judges'}")
    return 0
