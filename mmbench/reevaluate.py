"""``mmbench evaluate RUN_DIR``: evaluate a finished run again from its checkpoint, without
training — after a new metric arrives, or to spend more samples on an estimate."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .errors import MMBenchError
from .renames import as_current
from .evaluation import EvalContext
from .results import atomic_write_json, read_json, read_metrics, utc_now, write_metrics
from .runner import evaluate_metrics, recorded_options, resolve_metrics, upgrade_spec
from .train import load_checkpoint


def load_trained(run_dir: Path, plugins, device: torch.device):
    """(run.json contents, dataset, posterior, model) of a finished run, the model in eval mode."""
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
    model = posterior.build_model(dataset.modalities, hp["latent_dim"])
    model.load_state_dict(checkpoint["model"])
    return info, dataset, posterior, model.to(device).eval()


def reevaluate(run_dir: Path, plugins, *, metrics: list[str] | None, options: dict, data_dir: Path,
               cache_dir: Path, device: torch.device) -> tuple[dict, list[dict]]:
    """Evaluate ``metrics`` (None: every registered one) on the run's checkpoint and rewrite
    metrics.jsonl atomically: rows of the evaluated metric families are replaced, all other
    rows (cost, families not named) are kept. Each metric is configured with the options the
    run was given, then ``options`` ({metric: {option: value}}, e.g. more samples for an
    estimate) over them. Returns (the updated run.json contents, the new rows)."""
    run_dir = Path(run_dir)
    chosen = resolve_metrics(plugins, metrics)  # unknown names fail before any work
    info, dataset, posterior, model = load_trained(run_dir, plugins, device)
    given = upgrade_spec(as_current(info, plugins)["spec"], plugins)["options"]
    chosen = [m.configure(**{**given.get(m.name, {}), **options.get(m.name, {})}) for m in chosen]
    data = dataset.load(Path(data_dir)).to(device)
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
                eval_s_per_metric=per_metric, **recorded_options(chosen, info))
    atomic_write_json(run_dir / "run.json", info)
    return info, rows
