"""Coherence judges: per modality, a classifier trained by the suite on the training split and
kept as a file named by its content key (data fingerprint, modality, architecture, recipe).

Two families, of different kinds in architecture and training, so that a reader sees when a
coherence number depends on the classifier that reads it:

- ``cnn``: the modality's own judge network (``Modality.classifier``), Adam on cross-entropy;
- ``ridge``: random ReLU features of ``Modality.judge_features``, a ridge read-out fitted in
  closed form (:mod:`mmbench.ridge_judge`). Metrics judged by it carry the suffix ``_alt``.

A judge's identity is :func:`content_hash` of its weights: two labs that import the same
exported judges (:mod:`mmbench.judge_files`) judge with the same classifiers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import atomic_torch_save
from .errors import MMBenchError
from .judge_agreement import ALT_SUFFIX
from .locks import RunLock
from .ridge_judge import RECIPE as RIDGE_RECIPE
from .ridge_judge import RandomFeatureRidge, fit_ridge, shifts_for

RECIPE = dict(epochs=40, batch_size=64, lr=1e-3, weight_decay=1e-4, seed=0)


class Judge(NamedTuple):
    net: nn.Module
    test_acc: float
    #: :func:`content_hash` of the weights: which classifier judged
    digest: str


class JudgeFamily:
    """How one kind of judge is built and trained; ``suffix`` goes after its metrics' family names."""

    name: str
    suffix: str
    recipe: dict

    def build(self, modality, num_classes: int, example: Tensor) -> nn.Module | None:
        """The untrained judge of ``modality`` (None: it has none); ``example``: its training pool."""
        raise NotImplementedError

    def fit(self, net: nn.Module, x: Tensor, y: Tensor, max_steps: int | None = None) -> None:
        """Train ``net`` on (x, y); ``max_steps``: the dataset's cap on optimisation steps, where
        the family takes steps at all."""
        raise NotImplementedError

    def recipe_for(self, dataset) -> dict:
        """The recipe a judge of ``dataset`` is trained by (part of its cache key)."""
        return self.recipe


class ConvJudges(JudgeFamily):
    name, suffix, recipe = "cnn", "", RECIPE

    def build(self, modality, num_classes, example):
        return modality.classifier(num_classes)

    def recipe_for(self, dataset):
        return RECIPE if dataset.judge_steps is None else {**RECIPE, "max_steps": int(dataset.judge_steps)}

    def fit(self, net, x, y, max_steps=None):
        gen = torch.Generator().manual_seed(RECIPE["seed"])
        opt = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
        bs = RECIPE["batch_size"]
        steps = 0
        with torch.enable_grad():  # a judge may first be asked for inside a metric's no_grad
            for _ in range(RECIPE["epochs"]):
                net.train()
                order = torch.randperm(len(x), generator=gen).to(x.device)
                for i in range(0, len(x), bs):
                    if max_steps is not None and steps >= max_steps:
                        return
                    steps += 1
                    rows = order[i:i + bs]
                    loss = F.cross_entropy(net(x[rows]), y[rows])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()


class RidgeJudges(JudgeFamily):
    name, suffix, recipe = "ridge", ALT_SUFFIX, RIDGE_RECIPE

    def build(self, modality, num_classes, example):
        if modality.classifier(num_classes) is None:  # no labels to judge by (e.g. CUB: judged by CCA)
            return None
        in_features = modality.judge_features(example[:1]).shape[1]
        # no more random features than rows to fit them on (a tiny set gains nothing from more)
        features = min(RIDGE_RECIPE["features"], len(example) * len(shifts_for(example)))
        return RandomFeatureRidge(modality.judge_features, in_features, num_classes, features, RIDGE_RECIPE["seed"])

    def fit(self, net, x, y, max_steps=None):
        fit_ridge(net, x, y)  # closed form: no steps to cap


FAMILIES: dict[str, JudgeFamily] = {f.name: f for f in (ConvJudges(), RidgeJudges())}


def family(name: str) -> JudgeFamily:
    if name not in FAMILIES:
        raise MMBenchError(f"no judge family '{name}'; the families are {', '.join(FAMILIES)}")
    return FAMILIES[name]


def content_hash(state: dict) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values: the same for the same weights,
    whatever file or device holds them."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _key(fingerprint: str, modality, net: nn.Module, recipe: dict) -> str:
    h = hashlib.sha256(f"{fingerprint}|{modality.name}|{net}|{sorted(recipe.items())}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch: int = 2048) -> Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    return (predict(net, x) == y).float().mean().item()


def modality_of(dataset, data, m: int, modalities=None):
    """Modality ``m`` of ``data``: of ``modalities`` when given, else ``dataset.modalities_for(data)``."""
    return (modalities if modalities is not None else dataset.modalities_for(data))[m]


def untrained(dataset, data, m: int, kind: str = "cnn", modalities=None) -> nn.Module | None:
    """The judge network of modality ``m`` and family ``kind`` as built before training (fixed
    seed, whatever the run's), or None when the modality has no judge."""
    modality = modality_of(dataset, data, m, modalities)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RECIPE["seed"])
        net = family(kind).build(modality, dataset.num_classes, data.train.pools[modality.name])
    return None if net is None else net.to(data.train.index.device)


def judge_path(dataset, data, m: int, net: nn.Module, cache_dir: Path, kind: str = "cnn", modalities=None) -> Path:
    """Where the judge of modality ``m`` and family ``kind`` is kept: its name carries its key."""
    modality, chosen = modality_of(dataset, data, m, modalities), family(kind)
    tag = "" if chosen.name == "cnn" else f"-{chosen.name}"
    key = _key(data.fingerprint(pairs=False), modality, net, chosen.recipe_for(dataset))
    return Path(cache_dir) / "judges" / f"{dataset.name}-{modality.name}{tag}-{key}.pt"


def get_judge(dataset, data, m: int, cache_dir: Path | None, kind: str = "cnn", modalities=None) -> Judge | None:
    """The judge of modality ``m`` in family ``kind``, trained once and kept in ``cache_dir``;
    None if the modality has no classifier. ``modalities``: those of ``data`` (default
    ``dataset.modalities_for(data)``)."""
    net = untrained(dataset, data, m, kind, modalities)
    if net is None:
        return None
    name, device = modality_of(dataset, data, m, modalities).name, data.train.index.device
    if cache_dir is None:
        return _train(net, dataset, data, name, device, kind)
    path = judge_path(dataset, data, m, net, cache_dir, kind, modalities)
    cached = _load(net, path, device)
    if cached is not None:
        return cached
    # Several workers of one grid may ask at once: one trains, the others wait and load its
    # judge. Without this each trained its own (on a GPU, not bit-identical) and the runs of
    # one grid were judged by different classifiers.
    with RunLock(path.parent, name=f"{path.name}.lock"):
        cached = _load(net, path, device)
        if cached is not None:
            return cached
        judge = _train(net, dataset, data, name, device, kind)
        atomic_torch_save({"net": judge.net.state_dict(), "test_acc": judge.test_acc, "family": kind,
                           "dataset": dataset.name, "modality": name}, path)
        return judge


def _load(net: nn.Module, path: Path, device) -> Judge | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        return Judge(net.eval(), float(state["test_acc"]), content_hash(state["net"]))
    except Exception:
        return None  # a corrupt cache entry is retrained, never used


def _train(net: nn.Module, dataset, data, name: str, device: torch.device, kind: str) -> Judge:
    chosen = family(kind)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(RECIPE["seed"])
        chosen.fit(net, data.train.pools[name], data.train.pool_labels[name],
                   chosen.recipe_for(dataset).get("max_steps"))
    net.eval()
    return Judge(net, accuracy(net, data.test.pools[name], data.test.pool_labels[name]),
                 content_hash(net.state_dict()))
