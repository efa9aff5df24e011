"""One run of the grid: build the model, train (resuming when interrupted), evaluate every
metric, and record it all in the run directory. A finished run is never redone."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from . import __version__
from .errors import MMBenchError, Unsupported
from .evaluation import EvalContext
from .results import SCHEMA_VERSION, atomic_write_json, read_json, write_metrics
from .integrity import resumable_checkpoint
from .train import Diverged, TrainConfig, train

HPARAMS = ("latent_dim", "K", "epochs", "batch_size", "lr", "estimator")
#: evaluation settings a run records beside its hyper-parameters (see EvalContext.options)
EVAL_OPTIONS = ("eval_items", "loglik_samples", "loglik_items")


@dataclass
class RunSpec:
    """One cell of a grid: which data, which posterior, which seed, with what settings."""

    dataset: str
    posterior: str
    seed: int
    hparams: dict
    metrics: list[str] | None = None  # None: every metric that applies
    dataset_options: dict = field(default_factory=dict)

    def directory(self, out: Path) -> Path:
        return Path(out) / self.dataset / self.posterior / f"seed-{self.seed}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    """The processor's model name (platform.processor() is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def provenance(plugins, spec: RunSpec, device: torch.device) -> dict:
    def dist_of(registry, name):
        p = registry.provenance(name)
        return {"plugin": p.plugin, "distribution": p.distribution, "version": p.version}

    try:
        torchvision = version("torchvision")
    except PackageNotFoundError:
        torchvision = None
    return {
        "mmbench": __version__, "torch": torch.__version__, "torchvision": torchvision,
        "python": platform.python_version(), "platform": platform.platform(), "git_commit": _git_commit(),
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "dataset_plugin": dist_of(plugins.datasets, spec.dataset),
        "posterior_plugin": dist_of(plugins.posteriors, spec.posterior),
    }


def resolve_metrics(plugins, names: list[str] | None):
    return [plugins.metrics.get(n) for n in names] if names else list(plugins.metrics)


def execute(spec: RunSpec, plugins, *, out: Path, data_dir: Path, cache_dir: Path, device: torch.device,
            progress: bool = True, data=None) -> dict:
    """Carry out one run and return its run.json contents. Skips a finished run."""
    run_dir = spec.directory(out)
    info_path = run_dir / "run.json"
    previous = read_json(info_path) if info_path.exists() else None
    if previous is not None and previous.get("spec") != asdict(spec) and previous.get("status") == "done":
        raise MMBenchError(
            f"{run_dir} holds a finished run with other settings ({_differences(previous.get('spec', {}), asdict(spec))}); "
            "pass another --out or remove that directory")
    if previous is not None and previous.get("status") == "done" and (run_dir / "metrics.jsonl").exists():
        return previous

    dataset = plugins.datasets.get(spec.dataset).configure(**spec.dataset_options)
    posterior = plugins.posteriors.get(spec.posterior)
    metrics = resolve_metrics(plugins, spec.metrics)
    hp = spec.hparams
    if hp["estimator"] is None:
        hp = {**hp, "estimator": posterior.estimators[0]}
    elif hp["estimator"] not in posterior.estimators:
        raise MMBenchError(f"posterior '{posterior.name}' has no estimator '{hp['estimator']}'; "
                           f"it offers {', '.join(posterior.estimators)}")
    if data is None:
        data = dataset.load(data_dir).to(device)

    info = {"schema": SCHEMA_VERSION, "spec": asdict(spec), "resolved_hparams": hp, "status": "running",
            "started": (previous or {}).get("started", _now()), "provenance": provenance(plugins, spec, device),
            "data": data.info}
    atomic_write_json(info_path, info)

    torch.manual_seed(spec.seed)
    model = posterior.build_model(dataset.modalities, hp["latent_dim"]).to(device)
    cfg = TrainConfig(epochs=hp["epochs"], K=hp["K"], batch_size=hp["batch_size"], lr=hp["lr"],
                      estimator=hp["estimator"], seed=spec.seed)
    checkpoint = run_dir / "checkpoint.pt"
    resume = resumable_checkpoint(checkpoint, cfg, model)  # a bad or foreign one is named, set aside
    try:
        history = train(model, posterior, data.train, cfg, checkpoint=checkpoint, resume=resume, progress=progress)
    except Diverged as exc:
        info.update(status="failed", reason=f"diverged: {exc}", last_finite_epoch=exc.last_finite_epoch, finished=_now())
        atomic_write_json(info_path, info)
        return info
    except Exception as exc:  # a plugin's objective or network raised: name it, keep the grid going
        traceback.print_exc(file=sys.stderr)
        info.update(status="failed", finished=_now(), reason=(
            f"training raised {type(exc).__name__}: {exc} (posterior '{posterior.name}' of "
            f"{plugins.posteriors.provenance(posterior.name)}, dataset '{dataset.name}' of "
            f"{plugins.datasets.provenance(spec.dataset)})"))
        atomic_write_json(info_path, info)
        return info
    train_s = sum(h["seconds"] for h in history)  # counts the epochs of an interrupted session too

    model.eval()
    ctx = EvalContext(dataset=dataset, data=data, model=model, posterior=posterior, device=device,
                      seed=spec.seed, cache_dir=cache_dir, options=eval_options(hp), run_dir=run_dir)
    t1 = time.perf_counter()
    eval_seconds: dict = {}
    rows, skipped = evaluate_metrics(ctx, metrics, plugins, eval_seconds)
    cost = _cost_rows(history, train_s)
    rows += cost
    write_metrics(run_dir / "metrics.jsonl", rows)
    info.update(status="done", finished=_now(), train_s=train_s, eval_s=time.perf_counter() - t1,
                eval_s_per_metric=eval_seconds, history=history, skipped_metrics=skipped)
    atomic_write_json(info_path, info)
    return info


def eval_options(hp: dict) -> dict:
    """The settings metrics read from ``EvalContext.options`` (None: the metric's default)."""
    return {k: hp.get(k) for k in EVAL_OPTIONS}


def evaluate_metrics(ctx: EvalContext, metrics, plugins=None, seconds: dict | None = None) -> tuple[list[dict], dict]:
    """Every metric on ctx: (metrics.jsonl rows, {metric: why it was skipped}). A metric that
    cannot apply, or raises, is recorded as skipped; it never loses the trained run. With
    ``plugins``, a metric that raises is named with the plugin and distribution it came from;
    with ``seconds``, each evaluated metric's wall time is put there (where evaluation time goes)."""
    rows, skipped = [], {}
    for metric in metrics:
        torch.manual_seed(ctx.seed)
        reason = metric.skip_reason(ctx)
        if reason:
            skipped[metric.name] = reason
            continue
        started = time.perf_counter()
        try:
            values = list(metric.evaluate(ctx))
        except Unsupported as exc:  # the model cannot give what the metric needs: a stated skip, never a number
            skipped[metric.name] = f"unsupported by posterior '{ctx.posterior.name}': {exc}"
            continue
        except Exception as exc:  # one broken metric must not lose the trained run
            skipped[metric.name] = f"raised {type(exc).__name__}: {exc}"
            if not isinstance(exc, MMBenchError):  # a bug: its author needs the traceback; a user error does not
                traceback.print_exc(file=sys.stderr)
            if plugins is not None and metric.name in plugins.metrics:
                origin = plugins.metrics.provenance(metric.name)
                skipped[metric.name] += f" (metric '{metric.name}' of {origin})"
                print(f"mmbench: warning: metric '{metric.name}' of {origin} raised {type(exc).__name__}: {exc}; "
                      f"its values are left out (MMBENCH_LOAD_PLUGINS=-{origin.plugin} leaves the plugin out)",
                      file=sys.stderr)
            continue
        finally:
            if seconds is not None:
                seconds[metric.name] = round(time.perf_counter() - started, 3)
        rows += [_row(metric, v.name, v.value, v.details) for v in values]
    return rows, skipped


def _row(metric, name: str, value: float, details: dict | None = None) -> dict:
    row = {"metric": name, "value": float(value), "family": metric.name, "criterion": metric.criterion,
           "higher_is_better": metric.higher_is_better, "unit": metric.unit}
    return {**row, "details": details} if details else row


def _cost_rows(history: list[dict], train_s: float) -> list[dict]:
    last = history[-1] if history else {}
    def row(name, value, unit):
        return {"metric": name, "value": float(value), "family": "cost", "criterion": "cost",
                "higher_is_better": False, "unit": unit}
    rows = [row("train_s", train_s, "s")]
    if last:
        rows += [row("step_ms", last["step_ms"], "ms"), row("decoder_passes", last["decoder_passes"], "passes")]
    return rows


def _differences(old: dict, new: dict) -> str:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} {a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key} {a} vs {b}")
    return ", ".join(diffs) or "unknown"
