"""``mmbench evaluate RUN_DIR``: evaluate a finished run again from its checkpoint, without
training — after a new metric arrives, or to spend more samples on an estimate — and write
artifacts of it again."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .artifacts import resolve_artifacts, write_artifacts
from .errors import MMBenchError
from .renames import as_current
from .evaluation import EvalContext
from .results import atomic_write_json, read_json, read_metrics, utc_now, write_metrics
from .runner import evaluate_metrics, recorded_options, resolve_metrics, upgrade_spec
from .train import load_checkpoint


def load_trained(run_dir: Path, plugins, device: torch.device, data_dir: Path):
    """(run.json contents, dataset, its data on ``device``, posterior, model) of a finished run,
    the model in eval mode, built from the modalities of the data loaded from ``data_dir``."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    if info is None:
        raise MMBenchError(f"{run_dir} holds no readable run.json; name a run directory "
                           "(<out>/<dataset>/<posterior>/seed-<n>)")
    if info.get("status") != "done":
        raise MMBenchError(f"run {run_dir} is '{info.get('status')}', not done; "
                           "run the same `mmbench run` again to finish it first")
    # a dataset renamed since the run is looked up by its name today; run.json keeps what it says
    spec, hp = upgrade_spec(as_current(info, plugins)["spec"], plugins), info["resolved_hparams"]
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    if checkpoint is None:
        raise MMBenchError(f"run {run_dir} has no checkpoint.pt to evaluate")
    if checkpoint.get("epoch") != hp["epochs"]:
        raise MMBenchError(f"the checkpoint of {run_dir} is from epoch {checkpoint.get('epoch')} "
                           f"of {hp['epochs']}; it is not the finished model")
    dataset = plugins.datasets.get(spec["dataset"]).configure(**spec["dataset_options"])
    posterior = plugins.posteriors.get(spec["posterior"]).configure(**spec["options"].get(spec["posterior"], {}))
    data = dataset.load(Path(data_dir)).to(device)
    model = posterior.build_model(dataset.modalities_for(data), hp["latent_dim"])
    model.load_state_dict(checkpoint["model"])
    return info, dataset, data, posterior, model.to(device).eval()


def reevaluate(run_dir: Path, plugins, *, metrics: list[str] | None, options: dict, data_dir: Path,
               cache_dir: Path, device: torch.device, artifacts: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Evaluate ``metrics`` (None: every registered one) on the run's checkpoint and rewrite
    metrics.jsonl atomically: rows of the evaluated metric families are replaced, all other
    rows (cost, families not named) are kept. Each metric is configured with the options the
    run was given, then ``options`` ({metric or artifact: {option: value}}, e.g. more samples
    for an estimate) over them. ``artifacts`` (None: none) are written again, and run.json's
    listing of them replaced. Returns (the updated run.json contents, the new rows)."""
    run_dir = Path(run_dir)
    chosen = resolve_metrics(plugins, metrics)  # unknown names fail before any work
    drawn = resolve_artifacts(plugins, artifacts) if artifacts is not None else []
    info, dataset, data, posterior, model = load_trained(run_dir, plugins, device, data_dir)
    given = upgrade_spec(as_current(info, plugins)["spec"], plugins)["options"]
    chosen = [m.configure(**{**given.get(m.name, {}), **options.get(m.name, {})}) for m in chosen]
    drawn = [a.configure(**{**given.get(a.name, {}), **options.get(a.name, {})}) for a in drawn]
    ctx = EvalContext(dataset=dataset, data=data, model=model, posterior=posterior, device=device,
                      seed=info["spec"]["seed"], cache_dir=cache_dir, run_dir=run_dir)
    t0 = time.perf_counter()
    seconds: dict = {}
    rows, skipped = evaluate_metrics(ctx, chosen, seconds=seconds)
    families = {m.name for m in chosen}
    kept = [r for r in read_metrics(run_dir / "metrics.jsonl") or [] if r.get("family") not in families]
    write_metrics(run_dir / "metrics.jsonl", kept + rows)
    previous_skips = {k: v for k, v in info.get("skipped_metrics", {}).items() if k not in families}
    per_metric = {**info.get("eval_s_per_metric", {}), **seconds}
    info.update(skipped_metrics={**previous_skips, **skipped}, evaluated=utc_now(), eval_s=time.perf_counter() - t0,
                eval_s_per_metric=per_metric, **recorded_options([*chosen, *drawn], info))
    if drawn:
        written, errors, skipped_artifacts = write_artifacts(ctx, drawn, plugins)
        names = {a.name for a in drawn}
        for key, new in (("artifacts", written), ("artifact_errors", errors), ("skipped_artifacts", skipped_artifacts)):
            info[key] = {**{k: v for k, v in info.get(key, {}).items() if k not in names}, **new}
    atomic_write_json(run_dir / "run.json", info)
    return info, rows
