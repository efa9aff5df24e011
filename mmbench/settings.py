"""Every setting of a run, declared once.

The core declares its own settings here as :class:`mmbench.api.Option`s: the grid (``GRID``)
and training (``TRAINING``, a run's hyper-parameters). A plugin declares its own on the item
that uses them (``options`` of a dataset, posterior, metric, artifact, tracker or executor), and a user addresses
them by that item's name, the owner: ``--set OWNER.NAME=VALUE`` on the command line, a
``[OWNER]`` table in a grid file. The command line's flags, the grid file's keys and a run's
spec all derive from these declarations; nothing here names a plugin.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import NamedTuple

from .api import Configurable, Option
from .errors import MMBenchError

GRID = (
    Option("dataset", None, "dataset name(s), comma-separated (default: those declaring by_default)", type=str, many=True),
    Option("posteriors", None, "posterior name(s), comma-separated (default: those declaring by_default)",
           type=str, many=True),
    Option("seeds", (0,), "seeds, comma-separated, e.g. 0,1,2 (default: 0)", type=int, many=True),
    Option("metrics", None, "metric families, comma-separated (default: all that apply)", type=str, many=True),
    Option("out", "results/runs", "the results directory (default: results/runs)"),
    Option("data_dir", None, "where datasets live (default: $MMBENCH_HOME/data, ~/.cache/mmbench/data)", type=str),
    Option("device", "auto", "auto (CUDA when present; the default), cpu, cuda, cuda:N"),
    Option("executor", None, "how cells run (default: the executor declaring by_default); `mmbench plugins` lists them",
           type=str),
    Option("artifacts", None, "artifacts written beside each run, comma-separated (default: every one that applies; "
           "none: none)", type=str, many=True),
    Option("trackers", None, "experiment trackers that follow each run, comma-separated (default: none); "
           "`mmbench plugins` lists them", type=str, many=True, aliases=("tracker",)),
)
#: a run's hyper-parameters; None: the dataset's default (the estimator: the posterior's first)
TRAINING = (
    Option("latent_dim", None, "latent dimensions (default: the dataset's)", type=int, low=1),
    Option("K", None, "importance samples per expert (default: the dataset's)", type=int, low=1),
    Option("epochs", None, "training epochs (default: the dataset's)", type=int, low=1),
    Option("batch_size", None, "pairs per training step (default: the dataset's)", type=int, low=1),
    Option("lr", None, "Adam's learning rate (default: the dataset's)", type=float, low=0),
    Option("estimator", None, "gradient estimator, e.g. dreg or iwae for the IWAE-type bounds "
           "(default: the posterior's first)", type=str),
)
#: how a run's arithmetic is carried out (mmbench.acceleration); in a run's spec only when it
#: differs from the default, so that a default run keeps the spec, and directory, it had before
ARITHMETIC = (
    Option("precision", "fp32", "training arithmetic: fp32 (the default), bf16 (autocast; where the CPU or GPU "
           "has bf16 instructions), auto (bf16 where it has them, else fp32)", choices=("fp32", "bf16", "auto")),
    Option("compile", "off", "torch.compile the networks and likelihoods (uncompiled where compiling fails): "
           "off (the default), on, auto (on CUDA only)", choices=("off", "on", "auto")),
    Option("layout", "auto", "memory layout of the convolutions: auto (channels-last with bf16, the default "
           "layout in fp32; the default), default, channels_last (in fp32 1.2-1.5x faster on AMD EPYCs for "
           "MMVAE's SVHN nets, slower on some Xeons: benchmarks/test_step.py times both)",
           choices=("auto", "default", "channels_last")),
    Option("micro_batch", None, "items per forward/backward chunk of a training step, gradients added up: the same "
           "step for posteriors whose objective is a mean over items (not given: auto — on the CPU, a step keeping "
           "96 MiB or more of activations in chunks of about 24 MiB, about 2x faster than whole for MMVAE's "
           "MNIST-SVHN nets at K 30; smaller steps and GPUs whole)", type=int, low=1),
)
CORE = {o.name: o for o in GRID + TRAINING + ARITHMETIC}
#: other names of core settings: {alias: name} (``--tracker`` for ``--trackers``, in a grid file too)
CORE_ALIASES = {alias: o.name for o in CORE.values() for alias in o.aliases}
#: the value of ``artifacts`` that writes none
NO_ARTIFACTS = "none"
#: the dataset option that sets M, the modality count, of a dataset that takes one: set for
#: every dataset of a grid by ``--modalities`` (a grid file's ``modalities``), swept by `mmbench cost`
MODALITY_COUNT = "modalities"
HPARAMS = tuple(o.name for o in TRAINING)
#: the registries whose items may own options, in the order an owner's name is looked up
OWNER_KINDS = ("datasets", "posteriors", "metrics", "artifacts", "trackers", "executors")
#: what an owner may be, in words
OWNERS = "a dataset, posterior, metric, artifact, tracker or executor"


class Assignment(NamedTuple):
    """One setting as a user gave it: ``owner`` (an item's name; None: every dataset of the
    grid, as ``--data-option`` sets), the option's name, its raw value, and where it was given
    (for the error message)."""

    owner: str | None
    name: str
    value: object
    where: str


@contextmanager
def located(where: str):
    """An MMBenchError raised inside begins with where its setting was given ("" : nowhere)."""
    try:
        yield
    except MMBenchError as exc:
        raise MMBenchError(f"{where}: {exc}" if where else str(exc)) from None


def parse_assignment(text: str, where: str = "--set") -> Assignment | tuple[str, str]:
    """``OWNER.NAME=VALUE`` -> an Assignment; ``NAME=VALUE`` (a core setting) -> (name, value)."""
    key, sep, value = text.partition("=")
    owner, dot, name = key.strip().rpartition(".")
    name = name.replace("-", "_")  # as flags spell them; an owner's name is kept as registered
    if not sep or not name or (dot and not owner):
        raise MMBenchError(f"{where} {text}: expected OWNER.NAME=VALUE (OWNER: {OWNERS}, by its name)")
    if not dot:
        return name, value.strip()
    return Assignment(owner, name, value.strip(), f"{where} {text}")


def items(plugins):
    """(kind, item) of every registered item that may own options."""
    for kind in OWNER_KINDS:
        for item in getattr(plugins, kind):
            yield kind, item


def owner(plugins, name: str, option: str) -> Configurable:
    """The registered item called ``name`` whose option ``option`` is meant; did-you-mean when
    nothing is called so. Where two kinds share the name, the one declaring the option."""
    found = [item for _, item in items(plugins) if item.name == name]
    if not found:
        known = sorted({item.name for _, item in items(plugins)})
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise MMBenchError(f"nothing registered is called '{name}'; {hint}options belong to {OWNERS}, "
                           "by its name (`mmbench plugins` lists them)")
    declaring = [item for item in found if any(o.name == option for o in item.options)]
    if len(declaring) > 1:
        raise MMBenchError(f"'{name}' names {len(declaring)} items that each declare '{option}'; rename one of them")
    return (declaring or found)[0]


def aliases(plugins) -> dict[str, list[tuple[str, Option]]]:
    """{former name: [(owner, option)]}: the names options had before their owners declared them."""
    found: dict[str, list[tuple[str, Option]]] = {}
    for _, item in items(plugins):
        for option in item.options:
            for alias in option.aliases:
                found.setdefault(alias, []).append((item.name, option))
    return found


def alias(plugins, name: str) -> tuple[str, str] | None:
    """(owner, option) that the former setting ``name`` now is; None when no option has that alias."""
    targets = aliases(plugins).get(name)
    if not targets:
        return None
    if len(targets) > 1:
        spelled = " and ".join(f"{o}.{opt.name}" for o, opt in targets)
        raise MMBenchError(f"'{name}' is a former name of {spelled}; set one of them with --set")
    return targets[0][0], targets[0][1].name


def unknown_setting(name: str, plugins) -> MMBenchError:
    known = sorted(CORE) + sorted(CORE_ALIASES) + sorted(aliases(plugins))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return MMBenchError(f"unknown setting '{name}'; {hint}known: {', '.join(sorted(CORE))}, "
                        f"or OWNER.NAME for an option of {OWNERS}")


def chosen(registry, names: list[str] | None, flag: str) -> list:
    """The items ``names`` of a registry (each typo refused), or those declaring ``by_default``."""
    if names:
        return [registry.get(n) for n in names]
    picked = [item for item in registry if getattr(item, "by_default", False)]
    if not picked:
        available = ", ".join(registry.names()) or "none (no plugin provides any)"
        raise MMBenchError(f"no {registry.kind[:-1]} is picked by default here; name one with --{flag} "
                           f"(available: {available})")
    return picked
