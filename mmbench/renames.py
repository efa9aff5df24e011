"""Datasets renamed after runs were recorded: a run.json names the dataset as it was called
then, and a dataset that declares that name among its ``former_names`` and recognises the run's
recorded data (``Dataset.recorded``) owns the run now — so an old run directory stays readable
and is never read as the dataset that took its old name over."""

from __future__ import annotations

from .errors import MMBenchError


def current_name(info: dict, plugins) -> str:
    """The registered name of the dataset that recorded run ``info`` (its run.json contents)."""
    recorded = info["spec"]["dataset"]
    data_info = info.get("data") if isinstance(info.get("data"), dict) else {}
    for dataset in plugins.datasets:
        if recorded in dataset.former_names and dataset.name != recorded and dataset.recorded(data_info):
            return dataset.name
    return recorded


def as_current(info: dict, plugins) -> dict:
    """Run ``info`` (run.json contents) with its spec naming the dataset as it is called today."""
    name = current_name(info, plugins)
    return info if name == info["spec"]["dataset"] else {**info, "spec": {**info["spec"], "dataset": name}}


def renamed(records, plugins) -> tuple[list, list[str]]:
    """``records`` (mmbench.results.RunRecord) with each run's dataset under its current name, and
    one note per former name read that way."""
    out, counts = [], {}
    for r in records:
        info = as_current(r.info, plugins)
        if info is not r.info:
            key = (r.info["spec"]["dataset"], info["spec"]["dataset"])
            counts[key] = counts.get(key, 0) + 1
            r = type(r)(r.path, info, r.metrics)
        out.append(r)
    notes = [f"{n} run(s) recorded as '{old}' are of the dataset now named '{new}'" for (old, new), n in counts.items()]
    return out, notes


def refuse_foreign(previous: dict | None, plugins, run_dir) -> None:
    """Raise when ``run_dir`` holds a run of a dataset since renamed: the name now means another
    dataset, whose run this is not."""
    if previous and isinstance(previous.get("spec"), dict):
        name = current_name(previous, plugins)
        if name != previous["spec"]["dataset"]:
            raise MMBenchError(f"{run_dir} holds a run of the dataset now named '{name}' (recorded as "
                               f"'{previous['spec']['dataset']}'), not of today's '{previous['spec']['dataset']}'; "
                               "pass another --out")
