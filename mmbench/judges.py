"""Coherence judges: one classifier per modality, trained by the suite on the training split
and cached by content hash (data fingerprint, modality, architecture, recipe)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import atomic_torch_save
from .locks import RunLock

RECIPE = dict(epochs=40, batch_size=64, lr=1e-3, weight_decay=1e-4, seed=0)


def _key(fingerprint: str, modality, net: nn.Module) -> str:
    h = hashlib.sha256(f"{fingerprint}|{modality.name}|{net}|{sorted(RECIPE.items())}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch: int = 2048) -> Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    return (predict(net, x) == y).float().mean().item()


def _fit(net: nn.Module, x: Tensor, y: Tensor) -> None:
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    opt = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    bs = RECIPE["batch_size"]
    with torch.enable_grad():  # a judge may first be asked for inside a metric's no_grad
        for _ in range(RECIPE["epochs"]):
            net.train()
            order = torch.randperm(len(x), generator=gen).to(x.device)
            for i in range(0, len(x), bs):
                rows = order[i:i + bs]
                loss = F.cross_entropy(net(x[rows]), y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


def get_judge(dataset, data, m: int, cache_dir: Path | None) -> tuple[nn.Module, float] | None:
    """The judge of modality ``m`` and its test accuracy, or None if it has no classifier."""
    modality = dataset.modalities[m]
    # Judges are built and trained under a fixed seed, whatever the run's seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RECIPE["seed"])
        net = modality.classifier(dataset.num_classes)
    if net is None:
        return None
    device = data.train.index.device
    net = net.to(device)
    name = modality.name
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "judges" / f"{dataset.name}-{name}-{_key(data.fingerprint(pairs=False), modality, net)}.pt"
    if path is None:
        return _train(net, data, name, device)
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
        net, acc = _train(net, data, name, device)
        atomic_torch_save({"net": net.state_dict(), "test_acc": acc}, path)
        return net, acc


def _load(net: nn.Module, path: Path, device) -> tuple[nn.Module, float] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        return net.eval(), float(state["test_acc"])
    except Exception:
        return None  # a corrupt cache entry is retrained, never used


def _train(net: nn.Module, data, name: str, device: torch.device) -> tuple[nn.Module, float]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(RECIPE["seed"])
        _fit(net, data.train.pools[name], data.train.pool_labels[name])
    return net.eval(), accuracy(net, data.test.pools[name], data.test.pool_labels[name])
