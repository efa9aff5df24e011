"""One run of the grid: build the model, train (resuming when interrupted), evaluate every
metric, and record it all in the run directory. A finished run is never redone."""

from __future__ import annotations

import copy
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from . import __version__
from .acceleration import compile_pays, cpu_bf16_support, prepare_model, resolve_precision
from .artifacts import resolve_artifacts, write_artifacts
from .errors import MMBenchError, Unsupported
from .evaluation import EvalContext
from .renames import refuse_foreign
from .integrity import resumable_checkpoint
from .results import SCHEMA_VERSION, atomic_write_json, differences, read_json, utc_now, write_metrics
from .settings import HPARAMS, alias
from .step import resolve_micro_batch
from .tracking import RunTrackers
from .train import Diverged, TrainConfig, train


@dataclass
class RunSpec:
    """One cell of a grid: which data, which posterior, which seed, with what settings.

    ``hparams`` holds the core's training settings (:data:`mmbench.settings.TRAINING`, the
    dataset's defaults filled in); ``dataset_options`` and ``options`` ({posterior, metric or
    artifact: {option: value}}) hold the plugin options that differ from their defaults, so that
    a run given a default explicitly is the same run as one given nothing."""

    dataset: str
    posterior: str
    seed: int
    hparams: dict
    metrics: list[str] | None = None  # None: every metric that applies
    dataset_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    artifacts: list[str] | None = None  # None: every artifact that applies; ["none"]: none

    def directory(self, out: Path) -> Path:
        return Path(out) / self.dataset / self.posterior / f"seed-{self.seed}"


def upgrade_spec(spec: dict, plugins) -> dict:
    """A spec as run.json holds it, in today's form: older runs kept plugins' options among the
    hyper-parameters under their former names (each option's ``aliases``) and dataset options
    as given (strings, defaults included). Names no loaded plugin declares are left as they are."""
    hparams = dict(spec.get("hparams", {}))
    options = {owner: dict(values) for owner, values in spec.get("options", {}).items()}
    for key in [k for k in hparams if k not in HPARAMS]:
        target = alias(plugins, key)
        if target is not None:
            value = hparams.pop(key)
            if value is not None:
                options.setdefault(target[0], {})[target[1]] = value
    dataset_options = spec.get("dataset_options", {})
    if spec.get("dataset") in plugins.datasets:
        dataset_options = plugins.datasets.get(spec["dataset"]).configure(**dataset_options).changed_options
    for name, values in list(options.items()):
        item = next((r.get(name) for r in (plugins.posteriors, plugins.metrics, plugins.artifacts) if name in r), None)
        values = item.configure(**values).changed_options if item is not None else values
        if values:
            options[name] = values
        else:
            del options[name]
    # runs from before artifacts were a kind of their own wrote every one that applied
    return {"artifacts": None, **spec, "hparams": hparams, "dataset_options": dataset_options, "options": options}


def recorded_options(items, record: dict | None = None) -> dict:
    """run.json's ``options`` and ``changed_options`` with those of ``items`` (configured
    plugin items) set, over those of ``record`` (a run.json already written)."""
    record = record or {}
    changed = {**record.get("changed_options", {}), **{item.name: item.changed_options for item in items}}
    return {"options": {**record.get("options", {}), **{item.name: item.option_values for item in items}},
            "changed_options": {owner: values for owner, values in changed.items() if values}}


def resolve_estimator(posterior, given: str | None) -> str:
    """The gradient estimator a run of ``posterior`` uses: the one given, or the posterior's first."""
    if given is None:
        return posterior.estimators[0]
    if given not in posterior.estimators:
        raise MMBenchError(f"posterior '{posterior.name}' has no estimator '{given}'; "
                           f"it offers {', '.join(posterior.estimators)}")
    return given


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
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
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_bf16_support(),
        "dataset_plugin": dist_of(plugins.datasets, spec.dataset),
        "posterior_plugin": dist_of(plugins.posteriors, spec.posterior),
    }


def resolve_metrics(plugins, names: list[str] | None):
    """The metrics ``names`` (None: every registered one), each typo refused."""
    for name in names or []:
        if name not in plugins.metrics and name in plugins.artifacts:
            raise MMBenchError(f"'{name}' is an artifact, not a metric: pass --artifacts {name}")
    return [plugins.metrics.get(n) for n in names] if names else list(plugins.metrics)


def execute(spec: RunSpec, plugins, *, out: Path, data_dir: Path, cache_dir: Path, device: torch.device,
            progress: bool = True, data=None, trackers=()) -> dict:
    """Carry out one run and return its run.json contents. Skips a finished run.

    The dataset, the posterior, each metric and each artifact are configured with the spec's
    options; run.json records every one's option values ({owner: {option: value}}) under
    ``options``, and those that differ from their defaults under ``changed_options``.
    ``trackers`` (configured :class:`mmbench.api.Tracker` objects) follow the run; what they raise is
    kept in run.json's ``tracker_errors`` and never fails it."""
    run_dir = spec.directory(out)
    info_path = run_dir / "run.json"
    previous = read_json(info_path) if info_path.exists() else None
    refuse_foreign(previous, plugins, run_dir)
    before = upgrade_spec(previous["spec"], plugins) if isinstance((previous or {}).get("spec"), dict) else None
    if previous is not None and before != asdict(spec) and previous.get("status") == "done":
        raise MMBenchError(
            f"{run_dir} holds a finished run with other settings ({differences(before or {}, asdict(spec))}); "
            "pass another --out or remove that directory")
    if previous is not None and previous.get("status") == "done" and (run_dir / "metrics.jsonl").exists():
        return previous

    dataset = plugins.datasets.get(spec.dataset).configure(**spec.dataset_options)
    posterior = plugins.posteriors.get(spec.posterior).configure(**spec.options.get(spec.posterior, {}))
    metrics = [m.configure(**spec.options.get(m.name, {})) for m in resolve_metrics(plugins, spec.metrics)]
    artifacts = [a.configure(**spec.options.get(a.name, {})) for a in resolve_artifacts(plugins, spec.artifacts)]
    hp = {**spec.hparams, "estimator": resolve_estimator(posterior, spec.hparams["estimator"]),
          "precision": resolve_precision(spec.hparams.get("precision"), device),  # bf16 where there is none: an error
          "compile": compile_pays(spec.hparams.get("compile"), device)}
    if data is None:
        data = dataset.load(data_dir).to(device)
    modalities = dataset.modalities_for(data)

    info = {"schema": SCHEMA_VERSION, "spec": asdict(spec), "resolved_hparams": hp,
            **recorded_options([dataset, posterior, *metrics, *artifacts, *trackers]), "status": "running",
            "started": (previous or {}).get("started", utc_now()),
            "provenance": provenance(plugins, spec, device), "data": data.info}
    following = RunTrackers(trackers, plugins)
    if following:
        info["trackers"] = [t.name for t in trackers]
    atomic_write_json(info_path, info)

    torch.manual_seed(spec.seed)
    model = posterior.build_model(modalities, hp["latent_dim"]).to(device)
    info["provenance"]["layout"] = prepare_model(model, hp["precision"], compile=hp["compile"],
                                                 layout=spec.hparams.get("layout"))["layout"]
    hp["micro_batch"] = resolve_micro_batch(spec.hparams.get("micro_batch"), posterior, model, data.train,
                                            hp["batch_size"], hp["K"], hp["estimator"], hp["precision"])
    cfg = TrainConfig(**{f.name: hp[f.name] for f in fields(TrainConfig) if f.name != "seed"}, seed=spec.seed)
    checkpoint = run_dir / "checkpoint.pt"
    resume = resumable_checkpoint(checkpoint, cfg, model)  # a bad or foreign one is named, set aside
    began_with = resume["config"]["micro_batch"] if resume is not None else cfg.micro_batch
    if began_with != cfg.micro_batch:  # chunks change which draws go to which item, never the math
        if spec.hparams.get("micro_batch") is None:  # auto: the chunking the run began with
            cfg.micro_batch = hp["micro_batch"] = began_with
        else:
            print(f"mmbench: {run_dir} began in chunks of {began_with} items and goes on in chunks of "
                  f"{cfg.micro_batch}, as asked", file=sys.stderr)
    run_info = {**copy.deepcopy(info), "run_dir": str(run_dir.resolve()),
                "name": f"{spec.dataset}/{spec.posterior}/seed-{spec.seed}"}
    following.start(run_info, history=resume["history"] if resume else [])
    try:
        history = train(model, posterior, data.train, cfg, checkpoint=checkpoint, resume=resume, progress=progress,
                        on_epoch=following.log_epoch)
    except Diverged as exc:
        info.update(status="failed", reason=f"diverged: {exc}", last_finite_epoch=exc.last_finite_epoch, finished=utc_now())
        return _finish(info, info_path, following)
    except Exception as exc:  # a plugin's objective or network raised: name it, keep the grid going
        traceback.print_exc(file=sys.stderr)
        info.update(status="failed", finished=utc_now(), reason=(
            f"training raised {type(exc).__name__}: {exc} (posterior '{posterior.name}' of "
            f"{plugins.posteriors.provenance(posterior.name)}, dataset '{dataset.name}' of "
            f"{plugins.datasets.provenance(spec.dataset)})"))
        return _finish(info, info_path, following)
    train_s = sum(h["seconds"] for h in history)  # counts the epochs of an interrupted session too

    model.eval()
    ctx = EvalContext(dataset=dataset, data=data, model=model, posterior=posterior, device=device,
                      seed=spec.seed, cache_dir=cache_dir, run_dir=run_dir, modalities=modalities)
    t1 = time.perf_counter()
    eval_seconds: dict = {}
    rows, skipped = evaluate_metrics(ctx, metrics, plugins, eval_seconds)
    cost = _cost_rows(history, train_s)
    rows += cost
    write_metrics(run_dir / "metrics.jsonl", rows)
    written, artifact_errors, skipped_artifacts = write_artifacts(ctx, artifacts, plugins)
    info.update(status="done", finished=utc_now(), train_s=train_s, eval_s=time.perf_counter() - t1,
                eval_s_per_metric=eval_seconds, history=history, skipped_metrics=skipped, artifacts=written,
                artifact_errors=artifact_errors, skipped_artifacts=skipped_artifacts)
    return _finish(info, info_path, following, rows, [run_dir / p for paths in written.values() for p in paths])


def _finish(info: dict, info_path: Path, following: RunTrackers, rows=(), artifact_paths=()) -> dict:
    """The trackers told how the run ended (its metrics and artifacts when done), then run.json
    written once with what they raised."""
    following.finish(info["status"], rows, artifact_paths)
    if following:
        info["tracker_errors"] = dict(following.errors)
    atomic_write_json(info_path, info)
    return info


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
