"""Published results as data: numbers read in papers, each with its exact source, shown beside
the runs under the same metric names (``mmbench leaderboard DIR --published``) and listed by
``mmbench published``.

Plugins ship them through the ``register_published`` hook: ``register(PublishedFile(path))``
for each file (``register_folder`` registers every ``*.toml`` of a folder). A file holds the
numbers of one paper; its name (the file's stem) is unique among the loaded files.

The file format, version 1 (TOML)::

    format = 1                                    # required: the version of this format
    paper = "Shi et al., NeurIPS 2019"            # the citation every record inherits
    title = "Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models"
    url = "https://arxiv.org/abs/1911.03393"      # optional

    [[record]]
    model = "MMVAE"                               # the model as the paper names it
    dataset = "mnist-svhn"                        # mmbench's dataset name
    metric = "coherence_cross[mnist->svhn]"       # mmbench's metric name
    value = 0.864                                 # in mmbench's unit: a fraction, not 86.4 (%)
    table = "Table 2"                             # where in the paper it was read
    setting = "D=20, K=30, 30 epochs"             # what was run to get it
    spread = 0.01                                 # optional, in the value's unit ...
    spread_kind = "std over 5 runs"               # ... and then required: what the spread is
    note = "…"                                    # optional
    paper = "…"                                   # optional: a record's own citation

Required in every record: model, dataset, metric, value, table, setting, and a paper (its own
or the file's). A record that lacks one, or names an unknown field, is rejected with one line
naming the file and the record.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import MMBenchError

FORMAT = 1
REQUIRED = {"model": "model", "dataset": "dataset", "metric": "metric name", "value": "value",
            "table": "source table", "setting": "setting", "paper": "paper"}
OPTIONAL = ("spread", "spread_kind", "note", "title", "url")
METRIC_NAME = re.compile(r"^[A-Za-z][\w.-]*(\[[^\[\]]+\])?$")


@dataclass(frozen=True)
class PublishedRecord:
    """One published number and where it was read."""

    model: str
    dataset: str
    metric: str
    value: float
    paper: str
    table: str
    setting: str
    spread: float | None = None
    spread_kind: str | None = None
    note: str | None = None
    title: str | None = None
    url: str | None = None
    #: the file it came from and its place there (1-based), for messages
    source: str = ""
    position: int = 0

    @property
    def family(self) -> str:
        """The metric family: ``coherence_cross`` of ``coherence_cross[mnist->svhn]``."""
        return self.metric.split("[", 1)[0]


@dataclass(frozen=True)
class PublishedFile:
    """A file of published records that a plugin registers; read when asked (``records``)."""

    path: Path

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def records(self, units: dict[str, str] | None = None) -> list[PublishedRecord]:
        return load_file(self.path, units)


def register_folder(register, folder: Path) -> None:
    """Register every ``*.toml`` file of ``folder`` (none when it does not exist)."""
    for path in sorted(Path(folder).glob("*.toml")):
        register(PublishedFile(path))


def load_file(path: Path, units: dict[str, str] | None = None) -> list[PublishedRecord]:
    """The records of one file, each checked; ``units`` ({metric family: unit}, from the loaded
    metrics) also checks that a fraction lies in [0, 1]. Raises MMBenchError with one line."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MMBenchError(f"{path}: not a readable TOML file of published results ({exc})") from None
    if raw.get("format") != FORMAT:
        raise MMBenchError(f"{path}: format {raw.get('format')!r} is not one this mmbench reads (format = {FORMAT})")
    unknown = sorted(set(raw) - {"format", "paper", "title", "url", "record"})
    if unknown:
        raise MMBenchError(f"{path}: unknown top-level field(s) {', '.join(unknown)}; "
                           "a file has format, paper, title, url and [[record]] tables")
    entries = raw.get("record", [])
    if not isinstance(entries, list) or not entries:
        raise MMBenchError(f"{path}: no [[record]] tables; a file of published results holds at least one")
    inherited = {k: raw[k] for k in ("paper", "title", "url") if k in raw}
    records, seen = [], {}
    for i, entry in enumerate(entries, start=1):
        record = _record(path, i, {**inherited, **entry}, units or {})
        identity = (record.model, record.dataset, record.metric, record.table, record.setting)
        if identity in seen:
            raise MMBenchError(f"{_where(path, i, entry)}: the same number as record {seen[identity]} "
                               "(model, dataset, metric, table and setting); keep one")
        seen[identity] = i
        records.append(record)
    return records


def _where(path: Path, i: int, entry: dict) -> str:
    label = ", ".join(str(entry[k]) for k in ("model", "dataset", "metric") if isinstance(entry.get(k), (str, int, float)))
    return f"{path}: record {i}" + (f" ({label})" if label else "")


def _record(path: Path, i: int, entry: dict, units: dict[str, str]) -> PublishedRecord:
    where = _where(path, i, entry)
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise MMBenchError(f"{where} has unknown field(s) {', '.join(unknown)}; "
                           f"the fields are {', '.join([*REQUIRED, *OPTIONAL])}")
    for field, what in REQUIRED.items():
        if field not in entry or (isinstance(entry[field], str) and not entry[field].strip()):
            raise MMBenchError(f"{where} has no {field}: every published number names its {what}")
    for field in set(REQUIRED) - {"value"} | {"spread_kind", "note", "title", "url"}:
        if field in entry and not isinstance(entry[field], str):
            raise MMBenchError(f"{where}: {field} must be text, got {entry[field]!r}")
    for field in ("value", "spread"):
        if field in entry and (isinstance(entry[field], bool) or not isinstance(entry[field], (int, float))
                               or not math.isfinite(entry[field])):
            raise MMBenchError(f"{where}: {field} must be a finite number, got {entry[field]!r}")
    if ("spread" in entry) != ("spread_kind" in entry):
        raise MMBenchError(f"{where}: give spread and spread_kind together (what the spread is: e.g. "
                           "'std over 5 runs'), or neither")
    if not METRIC_NAME.match(entry["metric"]):
        raise MMBenchError(f"{where}: '{entry['metric']}' is not a metric name of mmbench's form "
                           "(family or family[detail], e.g. coherence_cross[mnist->svhn])")
    family = entry["metric"].split("[", 1)[0]
    if units.get(family) == "fraction" and not 0 <= entry["value"] <= 1:
        raise MMBenchError(f"{where}: value {entry['value']} is outside [0, 1]; {family} is a fraction in "
                           f"mmbench (write 0.864 for 86.4 %)")
    numbers = {k: float(entry[k]) for k in ("value", "spread") if k in entry}
    return PublishedRecord(**{**entry, **numbers}, source=str(path), position=i)


def collect(plugins, dataset: str | None = None) -> list[PublishedRecord]:
    """Every record the loaded plugins ship (of ``dataset`` when given), checked against the
    loaded metrics' units."""
    units = {m.name: m.unit for m in plugins.metrics}
    records = [r for f in plugins.published for r in f.records(units)]
    return [r for r in records if dataset is None or r.dataset == dataset]


# --------------------------------------------------------------------------- shown beside runs
def rows_beside(rows: list[dict], metrics: dict, records: list[PublishedRecord]) -> tuple[list[dict], list[str]]:
    """Leaderboard rows (mmbench.leaderboard.summarise's form) for the published records whose
    dataset has runs in ``rows`` and whose metric the runs report, each after its dataset's runs;
    and the notes that say where each number was read, or that a dataset has none."""
    out, notes = [], []
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    for dataset in datasets:
        out += [row for row in rows if row["dataset"] == dataset]
        mine = [r for r in records if r.dataset == dataset]
        shown = [r for r in mine if r.metric in metrics]
        if not mine:
            notes.append(f"no published numbers for {dataset}")
            continue
        if not shown:
            names = ", ".join(sorted({r.metric for r in mine}))
            notes.append(f"published numbers for {dataset} ({names}) name no metric these runs report")
            continue
        groups: dict[tuple, list[PublishedRecord]] = {}
        for r in shown:
            groups.setdefault((r.model, r.paper, r.table), []).append(r)
        for (model, paper, table), group in groups.items():
            stats = {r.metric: (r.value, r.spread if r.spread is not None else float("nan"), 1) for r in group}
            out.append({"dataset": dataset, "posterior": f"{model} · {paper}, {table}", "counts": {"published": 1},
                        "total": 1, "stats": stats, "published": True})
            details = "; ".join(dict.fromkeys(
                r.setting + (f" (± is {r.spread_kind})" if r.spread_kind else "") + (f"; {r.note}" if r.note else "")
                for r in group))
            notes.append(f"published: {model}, {paper}, {table}: {details}")
    return out, notes


def render_list(records: list[PublishedRecord], fmt: str = "md") -> str:
    """``mmbench published``: one line per record with its source, as a pipe table or csv."""
    columns = ["dataset", "model", "metric", "value", "spread", "spread_kind", "paper", "table", "setting", "note"]
    lines = [[r.dataset, r.model, r.metric, f"{r.value:g}", "" if r.spread is None else f"{r.spread:g}",
              r.spread_kind or "", r.paper, r.table, r.setting, r.note or ""] for r in records]
    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([columns, *lines])
        return buffer.getvalue().rstrip("\n")
    from tabulate import tabulate

    return tabulate(lines, headers=columns, tablefmt="pipe", disable_numparse=True)
