"""Leaderboard tables from a results directory: one row per (dataset, posterior), one column
per metric, mean ± std over seeds, the best value of each column (per dataset) in bold with
↑/↓ from the metric's ``higher_is_better``. Failed, running, corrupt and missing runs stay
visible: in the ``runs`` column, in cells that have no value, and in notes under the table.

Formats: ``md`` (pipe table), ``latex`` (tabular) and ``csv`` (long:
``dataset,posterior,metric,mean,std,n,unit,higher_is_better,status``; ``status`` is an
addition to DESIGN.md's form so that failed and missing cells are rows there too).

Under an md table, one line per run that wrote artifacts (run.json's ``artifacts``) links
each of its files, relative to the results directory (``root``): a leaderboard saved there as
a Markdown file links the pictures beside it.

With more than three modalities the columns of modality pairs (``coherence_cross[a->b]``,
``loglik[m|n]``, …: M(M−1) and more each) are left out of the md and latex tables unless asked
for (``pairs``), so that the per-modality and per-k summaries are what a reader sees; a note
says what was left out. The csv form always holds every value.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from pathlib import Path

from .judge_agreement import disagreements, twin
from .judge_agreement import notes as agreement_notes
from .published import rows_beside
from .results import RunRecord, read_json, read_metrics

FORMATS = ("md", "csv", "latex")
#: up to this many modalities a table shows the columns of modality pairs by default
PAIR_COLUMNS_UP_TO = 3
#: the tall table's groups: the MMVAE paper's four criteria in its order, then any other a
#: metric declares (in the order they first appear), then the runner's cost
FIRST_CRITERIA = ("latent factorisation", "cross coherence", "joint coherence", "synergy")
LAST_CRITERIA = ("cost",)
#: the line above an md table's links to the runs' artifacts
ARTIFACTS_HEADING = "Artifacts:"


def scan_runs(root: Path) -> list[RunRecord]:
    """Every run directory below ``root``, broken ones included: a run whose files cannot be
    trusted gets status ``corrupt`` and a reason naming the file."""
    from .integrity import run_dir_problem

    records = []
    for info_path in sorted(Path(root).rglob("run.json")):
        run_dir = info_path.parent
        problem = run_dir_problem(run_dir)
        if problem is not None:
            info = read_json(info_path)
            spec = info.get("spec") if isinstance(info, dict) and isinstance(info.get("spec"), dict) else _spec_from_path(run_dir)
            reason = f"{problem[0].name} {problem[1]}"
            records.append(RunRecord(run_dir, {"spec": spec, "status": "corrupt", "reason": reason}, []))
            continue
        info = read_json(info_path)
        metrics = read_metrics(run_dir / "metrics.jsonl") if info["status"] == "done" else []
        records.append(RunRecord(run_dir, info, metrics or []))
    return records


def _spec_from_path(run_dir: Path) -> dict:
    """<out>/<dataset>/<posterior>/seed-<n>: what a run is, when its run.json cannot say."""
    seed = run_dir.name.removeprefix("seed-")
    return {"dataset": run_dir.parent.parent.name, "posterior": run_dir.parent.name,
            "seed": int(seed) if seed.lstrip("-").isdigit() else seed}


# ------------------------------------------------------------------------------ the numbers
def _cells(records: list[RunRecord], expected=None):
    """{(dataset, posterior): {seed: record or None (missing)}}, in grid order."""
    cells: dict[tuple, dict] = {}
    for spec in expected or []:
        cells.setdefault((spec.dataset, spec.posterior), {})[spec.seed] = None
    for r in records:
        spec = r.info["spec"]
        cells.setdefault((spec["dataset"], spec["posterior"]), {})[spec["seed"]] = r
    if expected is None:  # a seed that one posterior of a dataset ran, every other one should have
        seeds: dict[str, set] = {}
        for (dataset, _), runs in cells.items():
            seeds.setdefault(dataset, set()).update(runs)
        for (dataset, _), runs in cells.items():
            for seed in seeds[dataset] - set(runs):
                runs[seed] = None
    return cells


def summarise(records: list[RunRecord], expected=None):
    """(rows, metrics, notes): ``rows`` one dict per (dataset, posterior) with its run counts
    and {metric: (mean, std, n)}; ``metrics`` {name: (unit, higher_is_better)} in first-seen
    order; ``notes`` one line per run that did not finish."""
    metrics: dict[str, tuple] = {}
    rows, notes = [], []
    for (dataset, posterior), runs in _cells(records, expected).items():
        counts: dict[str, int] = {}
        values: dict[str, list[float]] = {}
        for seed in sorted(runs, key=str):
            r = runs[seed]
            status = "missing" if r is None else r.status
            counts[status] = counts.get(status, 0) + 1
            if status != "done":
                where = f"{dataset}/{posterior}/seed-{seed}"
                reason = "" if r is None else r.info.get("reason") or ""
                if r is not None and r.info.get("last_finite_epoch") is not None:
                    reason += f" (last finite epoch {r.info['last_finite_epoch']})"
                notes.append(f"{where}: {status}" + (f": {reason}" if reason else ""))
                continue
            for m in r.metrics:
                metrics.setdefault(m["metric"], (m.get("unit", ""), bool(m.get("higher_is_better", True))))
                values.setdefault(m["metric"], []).append(float(m["value"]))
        stats = {}
        for name, vs in values.items():
            finite = [v for v in vs if math.isfinite(v)]
            mean = sum(finite) / len(finite) if finite else float("nan")
            std = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
                   if len(finite) > 1 else float("nan"))
            stats[name] = (mean, std, len(finite))
        rows.append({"dataset": dataset, "posterior": posterior, "counts": counts,
                     "total": sum(counts.values()), "stats": stats})
    return rows, metrics, notes


def fits(table: str, width: int) -> bool:
    """True when no line of ``table`` is wider than ``width`` characters (the links to
    artifacts under it aside: they may wrap)."""
    lines = table.split(f"\n\n{ARTIFACTS_HEADING}\n", 1)[0].splitlines()
    return max((len(line) for line in lines), default=0) <= width


def _best(rows, metrics) -> set[tuple]:
    """(row index, metric) of the best mean per dataset and metric, where two rows or more compete."""
    best = set()
    for name, (_, higher) in metrics.items():
        by_dataset: dict[str, list] = {}
        for i, row in enumerate(rows):
            if name in row["stats"] and math.isfinite(row["stats"][name][0]):
                by_dataset.setdefault(row["dataset"], []).append((row["stats"][name][0], i))
        for entries in by_dataset.values():
            if len(entries) < 2:
                continue
            target = max(v for v, _ in entries) if higher else min(v for v, _ in entries)
            best |= {(i, name) for v, i in entries if v == target}
    return best


def _status_word(counts: dict) -> str:
    """'done' when every run finished, else e.g. '2 done, 1 failed'."""
    if set(counts) == {"done"}:
        return "done"
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0] != "done"))


def _decimals(value: float) -> int:
    """Three significant digits, never scientific notation."""
    if not math.isfinite(value) or value == 0:
        return 2
    return min(6, max(0, 2 - math.floor(math.log10(abs(value)))))


# ------------------------------------------------------------------------------ which columns
def pair_modalities(metric: str) -> list[str] | None:
    """The modalities a column of modality pairs names (``coherence_cross[a->b]``: a, b;
    ``loglik[m|m,n]``: m, m, n; ``coherence_cond[k=2,->m3]``: m3), or None when the detail names
    no pair (``latent_acc[m]``, ``coherence_cond[k=2]``, no detail at all)."""
    detail = re.fullmatch(r"[^\[]*\[(.*)\]", metric)
    if detail is None or not re.search(r"->|\||,", detail.group(1)):
        return None
    return [part for part in re.split(r"->|\||,", detail.group(1)) if part and "=" not in part]


def hidden_pair_columns(rows) -> set[str]:
    """The columns of modality pairs of every dataset with more than PAIR_COLUMNS_UP_TO
    modalities (counted from the names those columns hold), but for any a smaller dataset shares."""
    columns_of: dict[str, set] = {}
    for row in rows:
        columns_of.setdefault(row["dataset"], set()).update(row["stats"])
    hide, keep = set(), set()
    for columns in columns_of.values():
        pairs = {c for c in columns if pair_modalities(c) is not None}
        modalities = {part for c in pairs for part in pair_modalities(c)}
        (hide if len(modalities) > PAIR_COLUMNS_UP_TO else keep).update(pairs)
    return hide - keep


def _left_out_note(hidden: set[str], metrics) -> str:
    counts: dict[str, int] = {}
    for family in (name.split("[", 1)[0] for name in metrics if name in hidden):
        counts[family] = counts.get(family, 0) + 1
    return (f"{len(hidden)} columns of modality pairs left out (more than {PAIR_COLUMNS_UP_TO} modalities: "
            + ", ".join(f"{family} {n}" for family, n in counts.items())
            + "); `--pairs` shows them, `--format csv` holds every value")


# ------------------------------------------------------------------------------ the formats
def render(records: list[RunRecord], fmt: str = "md", expected=None, provenance: bool = False,
           transpose: bool = False, pairs: bool = False, published=None, root: Path | None = None) -> str:
    """The leaderboard of ``records`` in ``fmt``; ``expected`` (run specs) makes cells that
    have no run directory yet show as missing. ``transpose``: one row per metric and one
    column per (dataset, posterior) instead, for when there are many metrics (md, latex),
    grouped under a heading row per criterion with the chance level of its metrics.
    ``pairs``: keep the columns of modality pairs that are left out above three modalities.
    ``published`` (mmbench.published records): marked rows of the papers' numbers after each
    dataset's runs, where dataset and metric match (never bold: the best is among the runs).
    A cell whose two coherence judges disagree (mmbench.judge_agreement) is marked †. An md
    table ends with links to the runs' artifacts, relative to ``root`` (the results directory;
    None: as the runs' paths are)."""
    if fmt not in FORMATS:
        from .errors import MMBenchError

        raise MMBenchError(f"unknown leaderboard format '{fmt}'; use one of {', '.join(FORMATS)}")
    rows, metrics, notes = summarise(records, expected)
    if not rows:
        return "(no runs)" if fmt != "csv" else _csv([], metrics)
    best = {(rows[i]["dataset"], rows[i]["posterior"], name) for i, name in _best(rows, metrics)}  # runs only
    if published is not None:
        rows, published_notes = rows_beside(rows, metrics, published)
        notes += published_notes
    if fmt == "csv":
        return _csv(rows, metrics)
    hidden = set() if pairs else hidden_pair_columns(rows)
    if hidden:
        notes = notes + [_left_out_note(hidden, metrics)]
        metrics = {name: m for name, m in metrics.items() if name not in hidden}
    flagged = disagreements(records)
    marked = {cell for d, p, m in flagged for cell in ((d, p, m), (d, p, twin(m)))}
    notes += agreement_notes(flagged)
    latex = fmt == "latex"
    esc = _latex_escape if latex else (lambda s: s)
    pm, up, down = (r" $\pm$ ", r"$\uparrow$", r"$\downarrow$") if latex else (" ± ", "↑", "↓")
    bold = (lambda s: rf"\textbf{{{s}}}") if latex else (lambda s: f"**{s}**")
    headers = ["dataset", "posterior", "runs"] + [f"{esc(m)} {up if hib else down}" for m, (_, hib) in metrics.items()]
    table = []
    dagger = r"$^\dagger$" if latex else "†"
    for row in rows:
        paper = row.get("published", False)
        done = 1 if paper else row["counts"].get("done", 0)
        runs = "published" if paper else (
            f"{done}/{row['total']}" + ("" if done == row["total"] else f" ({_status_word(row['counts'])})"))
        line = [esc(row["dataset"]), esc(row["posterior"]), runs]
        for name in metrics:
            if name not in row["stats"]:
                line.append("—" if done else max(row["counts"], key=row["counts"].get))  # e.g. failed, missing
                continue
            mean, std, n = row["stats"][name]
            d = _decimals(mean)
            spread = (n > 1 or paper) and math.isfinite(std)  # a paper's spread, where it gives one
            text = f"{mean:.{d}f}" + (f"{pm}{std:.{d}f}" if spread else "") + (f" (n={n})" if n != done else "")
            cell = (row["dataset"], row["posterior"], name)
            text += dagger if cell in marked and not paper else ""
            line.append(bold(text) if cell in best else text)
        table.append(line)
    from tabulate import tabulate

    colalign = ["left"] * 3 + ["right"] * len(metrics)
    if transpose:
        one_dataset = len({row["dataset"] for row in rows}) == 1
        columns = [line[1] if one_dataset else f"{line[0]} / {line[1]}" for line in table]
        table = [[headers[j]] + [line[j] for line in table] for j in range(2, len(headers))]
        table = table[:1] + _grouped(table[1:], list(metrics), _readings(records), esc, bold)
        headers = ["metric" if not one_dataset else f"{esc(rows[0]['dataset'])}: metric"] + columns
        colalign = ["left"] + ["right"] * len(columns)
    text = tabulate(table, headers=headers, tablefmt="latex_raw" if latex else "pipe", disable_numparse=True,
                    colalign=colalign)
    lines = [text]
    if notes:
        lines += ["", *(f"% {esc(n)}" if latex else f"- {n}" for n in notes)]
    if provenance and not latex:
        lines += ["", _provenance(records), "", _seconds(records)]
    links = [] if latex else artifact_links(records, root)
    if links:
        lines += ["", ARTIFACTS_HEADING, *links]
    return "\n".join(lines)


def _readings(records: list[RunRecord]) -> dict[str, tuple[str, float | None]]:
    """{metric: (criterion, chance)} as the runs' metrics.jsonl rows declare them (chance from
    a value's details, where its metric gives one; None otherwise)."""
    out: dict[str, tuple[str, float | None]] = {}
    for r in records:
        for m in r.metrics:
            chance = (m.get("details") or {}).get("chance")
            known = out.get(m["metric"])
            if known is None or (known[1] is None and chance is not None):
                out[m["metric"]] = (str(m.get("criterion") or ""), float(chance) if chance is not None else None)
    return out


def _grouped(lines: list[list[str]], names: list[str], readings: dict, esc, bold) -> list[list[str]]:
    """The tall table's metric rows under one heading row per criterion (FIRST_CRITERIA, the
    others as they first appear, LAST_CRITERIA), the heading giving the chance level its
    metrics share, or each row its own where they differ. When no metric declares a
    criterion, the rows stay as they are, with no heading."""
    criterion = {name: readings.get(name, ("", None))[0] or "other" for name in names}
    chance = {name: readings.get(name, ("", None))[1] for name in names}
    if set(criterion.values()) == {"other"}:
        return lines
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(criterion[name], []).append(i)
    rank = {c: i for i, c in enumerate(FIRST_CRITERIA)} | {c: len(groups) + 10 + i for i, c in enumerate(LAST_CRITERIA)}
    out = []
    for group in sorted(groups, key=lambda c: rank.get(c, len(FIRST_CRITERIA) + list(groups).index(c))):
        members = groups[group]
        chances = {chance[names[i]] for i in members}
        shared = next(iter(chances)) if len(chances) == 1 else None
        out.append([bold(esc(group)) + (f" (chance {shared:.3g})" if shared is not None else "")]
                   + [""] * (len(lines[0]) - 1))
        for i in members:
            own = chance[names[i]]
            out.append([lines[i][0] + (f" (chance {own:.3g})" if own is not None and shared is None else "")]
                       + lines[i][1:])
    return out


def artifact_links(records: list[RunRecord], root: Path | None = None) -> list[str]:
    """One md line per finished run that wrote artifacts: the run, then each file as a link
    relative to ``root`` (``- digits/moe/seed-0: pictures [samples_joint.png](digits/moe/...)``)."""
    lines = []
    for r in records:
        listed = r.info.get("artifacts") if r.status == "done" else None
        if not isinstance(listed, dict) or not any(listed.values()):
            continue
        where = _relative(r.path, root)
        parts = []
        for name, paths in listed.items():
            files = ", ".join(f"[{Path(p).name}]({(where / p).as_posix()})" for p in paths)
            parts.append(f"{name} {files}")
        lines.append(f"- {where.as_posix()}: " + "; ".join(parts))
    return lines


def _relative(path: Path, root: Path | None) -> Path:
    if root is None:
        return Path(path)
    try:
        return Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return Path(path)


def _csv(rows, metrics) -> str:
    import pandas as pd

    out = []
    for row in rows:
        status = _status_word(row["counts"])
        for name, (unit, hib) in metrics.items():
            if name in row["stats"]:
                mean, std, n = row["stats"][name]
                spread = (n > 1 or row.get("published")) and math.isfinite(std)
                out.append([row["dataset"], row["posterior"], name, mean, std if spread else None, n, unit, hib, status])
        if not row["stats"]:  # nothing finished: the cell still has its row
            out.append([row["dataset"], row["posterior"], "", None, None, 0, "", None, status])
    columns = ["dataset", "posterior", "metric", "mean", "std", "n", "unit", "higher_is_better", "status"]
    buffer = io.StringIO()
    pd.DataFrame(out, columns=columns).to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    return buffer.getvalue().rstrip("\n")


def _latex_escape(text: str) -> str:
    return re.sub(r"([_%&#$])", r"\\\1", str(text))


def _provenance(records: list[RunRecord]) -> str:
    """One line of where the numbers came from, read from the runs' run.json."""
    done = [r for r in records if r.status == "done"]
    def values(key):
        return sorted({str(r.info.get("provenance", {}).get(key)) for r in done if r.info.get("provenance")})
    hours = sum(r.info.get("train_s", 0) + r.info.get("eval_s", 0) for r in done) / 3600
    # runs from before precisions were recorded trained in fp32
    precisions = sorted({str(r.info.get("resolved_hparams", {}).get("precision", "fp32")) for r in done})
    return (f"{len(done)} finished runs of {len(records)}; mmbench {', '.join(values('mmbench'))}, "
            f"torch {', '.join(values('torch'))} on {', '.join(values('device'))} "
            f"({', '.join(values('device_name'))}), {'/'.join(precisions)} training; "
            f"git {', '.join(c[:12] for c in values('git_commit'))}; "
            f"{hours:.2f} h of training and evaluation.{_chunking(done)}{_changed_options(done)}")


def _chunking(done: list[RunRecord]) -> str:
    """' Steps in item chunks of at most 6 items (2 of 4 runs).' where runs split their steps
    (mmbench.step): the same math, other assignments of random draws to items."""
    hps = [r.info.get("resolved_hparams", {}) for r in done]
    sizes = Counter(hp["micro_batch"] for hp in hps
                    if hp.get("micro_batch") is not None and hp["micro_batch"] < hp.get("batch_size", 0))
    if not sizes:
        return ""
    return (f" Steps in item chunks of at most {'/'.join(map(str, sorted(sizes)))} items "
            f"({sum(sizes.values())} of {len(done)} runs).")


def _changed_options(done: list[RunRecord]) -> str:
    """' Options set: loglik.samples=5000 (all runs), digits.partners=1 (2 of 4 runs).' from the
    runs' ``changed_options`` (runs from before it was recorded: their spec's dataset options)."""
    counts: dict[str, int] = {}
    for r in done:
        spec = r.info.get("spec", {})
        changed = r.info.get("changed_options", {spec.get("dataset"): spec.get("dataset_options") or {}})
        for owner, values in changed.items():
            for name, value in values.items():
                counts[f"{owner}.{name}={value}"] = counts.get(f"{owner}.{name}={value}", 0) + 1
    if not counts:
        return ""
    spelled = [f"{k} ({'all runs' if n == len(done) else f'{n} of {len(done)} runs'})" for k, n in counts.items()]
    return f" Options set: {', '.join(spelled)}."


def _seconds(records: list[RunRecord]) -> str:
    """Where the time of the finished runs went: training, evaluation, and each metric family's
    evaluation (run.json's ``eval_s_per_metric``), in seconds per run, mean over the runs."""
    done = [r for r in records if r.status == "done"]
    if not done:
        return "No finished run to time."
    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")
    per_metric: dict[str, list[float]] = {}
    for r in done:
        for family, seconds in r.info.get("eval_s_per_metric", {}).items():
            per_metric.setdefault(family, []).append(float(seconds))
    families = sorted(per_metric, key=lambda f: -mean(per_metric[f]))
    return (f"Seconds per run (mean of {len(done)}): training {mean(r.info.get('train_s', 0) for r in done):.0f}, "
            f"evaluation {mean(r.info.get('eval_s', 0) for r in done):.0f}"
            + (": " + ", ".join(f"{f} {mean(per_metric[f]):.1f}" for f in families) if families else "") + ".")
