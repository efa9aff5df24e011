"""What a metric sees of a trained model: the context, and batched helpers over the model
contract (mmbench.model) to condition, represent, draw cross latents and decode without
holding a whole split's activations at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import judges
from .model import items_view

BATCH = 1024


@dataclass
class EvalContext:
    """What a metric or an artifact reads: the configured dataset, its data on the device, the
    trained model and its posterior."""

    dataset: object
    data: object  # PairedData on the device
    model: object
    posterior: object
    device: torch.device
    seed: int = 0
    cache_dir: Path | None = None
    #: the run's directory (artifacts write below it; None: there is none)
    run_dir: Path | None = None
    #: the modalities of ``data``, those the model was built from; None: ``dataset.modalities_for(data)``
    modalities: list | None = None
    _judges: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.modalities is None:
            derive = getattr(self.dataset, "modalities_for", None)
            self.modalities = list(derive(self.data) if derive is not None and self.data is not None
                                   else self.dataset.modalities)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def judge(self, m: int, kind: str = "cnn"):
        """The judge of modality m in family ``kind`` (``cnn`` or ``ridge``, see
        :mod:`mmbench.judges`): a :class:`mmbench.judges.Judge` (net, test_acc, digest), trained
        once and cached; None if the modality has no classifier."""
        if (m, kind) not in self._judges:
            self._judges[(m, kind)] = judges.get_judge(self.dataset, self.data, m, self.cache_dir, kind,
                                                       modalities=self.modalities)
        return self._judges[(m, kind)]

    def test_rows(self, limit: int | None = None) -> Tensor:
        """A fixed subset of test pairs (the same for every run and posterior)."""
        n = len(self.data.test)
        if limit is None or limit >= n:
            return torch.arange(n, device=self.device)
        gen = torch.Generator().manual_seed(12345)
        return torch.randperm(n, generator=gen)[:limit].sort().values.to(self.device)

    def _batched(self, xs_by_modality: dict[int, Tensor], read) -> Tensor:
        """read(xs, observed) over batches of the listed modalities' items, concatenated."""
        observed = sorted(xs_by_modality)
        n = len(next(iter(xs_by_modality.values())))
        out = []
        for i in range(0, n, BATCH):
            xs = [xs_by_modality[m][i:i + BATCH] if m in xs_by_modality else None for m in range(len(self.names))]
            out.append(read(xs, observed))
        return torch.cat(out)

    @torch.no_grad()
    def posterior_means(self, xs_by_modality: dict[int, Tensor]) -> Tensor:
        """Means of the joint posterior given the listed modalities' items [N, D], batched."""
        return self._batched(xs_by_modality, lambda xs, observed: self.model.condition(xs, observed).mean)

    @torch.no_grad()
    def representations(self, xs_by_modality: dict[int, Tensor]) -> Tensor:
        """What the latent probe reads given the listed modalities' items [N, R], batched."""
        return self._batched(xs_by_modality, self.model.represent)

    @torch.no_grad()
    def cross_latents(self, xs_by_modality: dict[int, Tensor]) -> Tensor:
        """One latent draw [N, D] per item to generate the unlisted modalities from, batched."""
        return self._batched(xs_by_modality, self.model.cross_latents)

    @torch.no_grad()
    def read_subsets(self, xs_by_modality: dict[int, Tensor], subsets, read: str) -> list[Tensor]:
        """``read`` (``represent`` or ``cross_latents``) given each subset of the listed
        modalities' items: one tensor [N, ...] per subset, equal to ``representations`` /
        ``cross_latents`` of that subset alone (the same draws, in the same order), with each
        modality encoded once where the model allows it (``mmbench.model.items_view``)."""
        n = len(next(iter(xs_by_modality.values())))
        views = [items_view(self.model, [xs_by_modality[m][i:i + BATCH] if m in xs_by_modality else None
                                         for m in range(len(self.names))])
                 for i in range(0, n, BATCH)]
        return [torch.cat([getattr(view, read)(sorted(subset)) for view in views]) for subset in subsets]

    @torch.no_grad()
    def decode_means(self, d: int, z: Tensor) -> Tensor:
        """The decoder's representative output for modality d at latents z [N, D], batched."""
        modality = self.modalities[d]
        return torch.cat([modality.decode_mean(self.model.decode(d, z[i:i + BATCH])) for i in range(0, len(z), BATCH)])
