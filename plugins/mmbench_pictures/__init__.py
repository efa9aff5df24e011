"""The pictures people look at (MMVAE Figures 4, 5 and 7): an artifact, saved as PNG files in
``<run_dir>/artifacts/pictures/``.

- ``samples_joint.png``   10 samples of the prior, every modality decoded, side by side (Fig. 4)
- ``reconstructions.png`` 8 fixed test pairs: the data, then every modality decoded from each
  single modality's posterior mean — reconstructions on the diagonal, cross generations off it (Fig. 5)
- ``traversal_<m>.png``   for each modality m: one row per latent dimension, that dimension
  moved over ±5 learnt prior scales (11 steps) from the prior's location, the others held there
- ``kl.png`` (and ``kl.json``) per-dimension KL of each unimodal posterior and of the joint
  posterior to the prior, and the symmetric KL between unimodal posteriors of the same pair (Fig. 7)

Decoded items are the decoders' means (``Modality.decode_mean``); captions are drawn as text.

References: Shi, Siddharth, Paige, Torr. Variational Mixture-of-Experts Autoencoders for
Multi-Modal Deep Generative Models. NeurIPS 2019 (Figures 4, 5, 7).
"""

from __future__ import annotations

import json
from itertools import combinations

import torch

from mmbench import hookimpl
from mmbench.api import Artifact
from mmbench.results import atomic_save_figure, atomic_write_text

from .divergence import kl_per_dim, symmetric_kl_per_dim
from .grid import compose, save_png

JOINT_SAMPLES = 10
ITEMS = 8
TRAVERSAL_STEPS = 11
TRAVERSAL_SCALES = 5.0
KL_ITEMS = 500


class Pictures(Artifact):
    name = "pictures"
    description = "PNGs of prior samples, reconstructions/cross generations, latent traversals and per-dimension KL"

    def _render(self, ctx, d: int, x) -> list:
        modality = ctx.modalities[d]
        return [modality.render(item) for item in x]

    @torch.no_grad()
    def joint_samples(self, ctx):
        z = ctx.model.prior().rsample(JOINT_SAMPLES)
        columns = [self._render(ctx, d, ctx.decode_means(d, z)) for d in range(len(ctx.names))]
        return compose([list(row) for row in zip(*columns)], header=list(ctx.names))

    @torch.no_grad()
    def reconstructions(self, ctx):
        names = ctx.names
        rows = ctx.test_rows(ITEMS)
        xs = ctx.data.test.batch(rows, names)
        columns = [self._render(ctx, d, x) for d, x in enumerate(xs)]
        header = [f"data {n}" for n in names]
        for a, src in enumerate(names):
            z = ctx.posterior_means({a: xs[a]})
            for d, dst in enumerate(names):
                columns.append(self._render(ctx, d, ctx.decode_means(d, z)))
                header.append(f"{src}->{dst}")
        return compose([list(row) for row in zip(*columns)], header=header)

    @torch.no_grad()
    def traversal(self, ctx, d: int):
        """Rows: latent dimensions; columns: loc + t·scale for t from −5 to 5 (the prior's)."""
        prior = ctx.model.prior()
        steps = torch.linspace(-TRAVERSAL_SCALES, TRAVERSAL_SCALES, TRAVERSAL_STEPS, device=ctx.device)
        dims = prior.loc.shape[-1]
        z = prior.loc.expand(dims, TRAVERSAL_STEPS, dims).clone()  # [row dim, step, D]
        rows = torch.arange(dims, device=ctx.device)
        z[rows, :, rows] = prior.loc[rows, None] + steps[None, :] * prior.scale[rows, None]
        items = self._render(ctx, d, ctx.decode_means(d, z.reshape(-1, dims)))
        grid = [items[r * TRAVERSAL_STEPS:(r + 1) * TRAVERSAL_STEPS] for r in range(dims)]
        return compose(grid, header=[f"{t:+.0f} scale" for t in steps.tolist()])

    @torch.no_grad()
    def divergences(self, ctx) -> dict:
        names = ctx.names
        rows = ctx.test_rows(KL_ITEMS)
        xs = ctx.data.test.batch(rows, names)
        prior = ctx.model.prior()
        singles = {n: ctx.model.condition([x if j == m else None for j, x in enumerate(xs)], [m])
                   for m, n in enumerate(names)}
        to_prior = {n: kl_per_dim(q, prior).tolist() for n, q in singles.items()}
        if len(names) > 1:
            joint = ctx.model.condition(xs, list(range(len(names))))
            to_prior["joint"] = kl_per_dim(joint, prior).tolist()
        between = {f"{a},{b}": symmetric_kl_per_dim(singles[a], singles[b]).tolist()
                   for a, b in combinations(names, 2)}
        return {"items": len(rows), "kl_to_prior": to_prior, "symmetric_kl": between}

    def kl_figure(self, kl: dict, path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 2 if kl["symmetric_kl"] else 1
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.5), squeeze=False)
        for ax, (key, title) in zip(axes[0], (("kl_to_prior", "KL(q(z|x) || p(z)) per dimension"),
                                              ("symmetric_kl", "symmetric KL between posteriors"))):
            for label, values in kl[key].items():
                ax.plot(range(len(values)), values, marker="o", markersize=3, label=label)
            ax.set(title=title, xlabel="latent dimension", ylabel="nats (symlog)")
            ax.set_yscale("symlog", linthresh=1.0)  # collapsed and used dimensions differ by orders
            ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_save_figure(fig, path, dpi=100)

    def write(self, ctx, folder):
        written = [save_png(self.joint_samples(ctx), folder / "samples_joint.png"),
                   save_png(self.reconstructions(ctx), folder / "reconstructions.png")]
        for d, name in enumerate(ctx.names):
            written.append(save_png(self.traversal(ctx, d), folder / f"traversal_{name}.png"))
        kl = self.divergences(ctx)
        atomic_write_text(folder / "kl.json", json.dumps(kl, indent=1) + "\n")
        self.kl_figure(kl, folder / "kl.png")
        return [*written, folder / "kl.json", folder / "kl.png"]


@hookimpl
def register_artifacts(register):
    register(Pictures())
