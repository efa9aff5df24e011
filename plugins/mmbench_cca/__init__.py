"""Image–language coherence by canonical correlation (MMVAE §4.2, Table 4) as a metric.

For every pair of a text modality t (a ``mmbench.modalities.TextModality``) and a non-text
modality a of the dataset: captions become FastText sentence embeddings (fitted on the training
captions), items of a become their feature vectors (``Modality.features``, else the flattened
observation); CCA (k = 40) is fitted on the distinct training pairs; a pair's score is the
cosine of its two centred canonical projections, averaged.

- ``cca_data``            the true test pairs: the ceiling the data allow
- ``cca_joint``           1,000 samples of the prior, decoded into both modalities
- ``cca_cross[a->t]``     each test item of a with the caption generated from q(z | x_a) (one sample)
- ``cca_cross[t->a]``     each test caption with the item of a generated from q(z | x_t)

When a dataset has more than one such pair (``digits``: grey and colour images, one caption),
``cca_data`` and ``cca_joint`` name their pair: ``cca_data[colour,caption]``. Datasets without
a text modality are skipped with the reason.

References: Shi, Siddharth, Paige, Torr. Variational Mixture-of-Experts Autoencoders for
Multi-Modal Deep Generative Models. NeurIPS 2019 (§4.2, Table 4).
"""

from __future__ import annotations

import numpy as np
import torch

from mmbench import hookimpl
from mmbench.api import Metric, MetricValue
from mmbench.evaluation import BATCH
from mmbench.modalities import TextModality

from .correlation import K, cached_cca, pair_correlation
from .embedding import fit_sentence_embedding

JOINT_SAMPLES = 1000
MAX_TRAIN_PAIRS = 10_000
MAX_TEST_PAIRS = 1000


def _have_gensim() -> bool:
    try:
        import gensim  # noqa: F401
    except ImportError:
        return False
    return True


def is_text(modality) -> bool:
    return isinstance(modality, TextModality)


def image_text_pairs(modalities) -> list[tuple[int, int]]:
    """(a, t) for every non-text modality a and text modality t, in the dataset's order."""
    texts = [i for i, m in enumerate(modalities) if is_text(m)]
    return [(a, t) for t in texts for a, m in enumerate(modalities) if not is_text(m)]


def distinct_pairs(split, a: int, t: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool indices of the distinct (a, t) pairs of a split, at most ``limit`` (a fixed subset)."""
    pairs = torch.unique(split.index[:, [a, t]].cpu(), dim=0)
    if len(pairs) > limit:
        pairs = pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))[:limit]]
    return pairs[:, 0], pairs[:, 1]


class ImageLanguageCCA(Metric):
    name = "cca"
    criterion = "image-language coherence"
    higher_is_better = True
    unit = "correlation"
    description = ("FastText sentence embeddings vs item features, CCA k=40: cca_data, cca_joint "
                   "(1,000 prior samples), cca_cross[a->t], cca_cross[t->a] (Table 4)")

    def __init__(self, k: int = K, max_train_pairs: int = MAX_TRAIN_PAIRS, **fasttext):
        """``fasttext``: overrides of the FastText settings (mmbench_cca.embedding.FASTTEXT)."""
        self.k, self.max_train_pairs, self.fasttext = k, max_train_pairs, fasttext

    def skip_reason(self, ctx):
        mods = ctx.modalities
        if not any(is_text(m) for m in mods):
            return "needs a text modality (image–language coherence)"
        if not image_text_pairs(mods):
            return "needs a non-text modality beside the text"
        if not _have_gensim():
            return "needs gensim for its FastText sentence embeddings: pip install 'mmbench[text]'"
        return None

    # ---------------------------------------------------------------- features
    def _features(self, ctx, a: int, x: torch.Tensor) -> np.ndarray:
        modality = ctx.modalities[a]
        out = []
        for i in range(0, len(x), BATCH):
            part = x[i:i + BATCH]
            f = modality.features(part)
            out.append((part.flatten(1) if f is None else f).double().cpu().numpy())
        return np.concatenate(out)

    def _sentences(self, ctx, t: int, tokens: torch.Tensor) -> list[list[str]]:
        modality = ctx.modalities[t]
        return [modality.detokenise(row).split() for row in tokens.tolist()]

    def _embedding(self, ctx, t: int):
        modality = ctx.modalities[t]
        words = [w for w in modality.vocab if w not in ("<pad>", "<eos>")]
        sentences = self._sentences(ctx, t, ctx.data.train.pools[ctx.names[t]])
        return fit_sentence_embedding(sentences, words, ctx.cache_dir, **self.fasttext)

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def _cross(self, ctx, src: int, dst: int, x: torch.Tensor) -> torch.Tensor:
        """Decode dst from one sample of q(z | x_src), batched."""
        return ctx.decode_means(dst, ctx.cross_latents({src: x}))

    # ---------------------------------------------------------------- metric
    def evaluate(self, ctx):
        names, data = ctx.names, ctx.data
        pairs = image_text_pairs(ctx.modalities)
        embeddings = {}
        for a, t in pairs:
            if t not in embeddings:
                embeddings[t] = self._embedding(ctx, t)
            embed = embeddings[t]
            text_features = lambda tokens: embed(self._sentences(ctx, t, tokens))  # noqa: E731
            ia, it = distinct_pairs(data.train, a, t, self.max_train_pairs)
            proj_a, proj_t = cached_cca(self._features(ctx, a, data.train.pools[names[a]][ia.to(ctx.device)]),
                                        text_features(data.train.pools[names[t]][it.to(ctx.device)]),
                                        ctx.cache_dir, self.k)
            corr = lambda x_a, tokens: pair_correlation(proj_a(self._features(ctx, a, x_a)),  # noqa: E731
                                                        proj_t(text_features(tokens)))
            ja, jt = distinct_pairs(data.test, a, t, MAX_TEST_PAIRS)
            x_a, x_t = data.test.pools[names[a]][ja.to(ctx.device)], data.test.pools[names[t]][jt.to(ctx.device)]
            suffix = f"[{names[a]},{names[t]}]" if len(pairs) > 1 else ""
            yield MetricValue(f"cca_data{suffix}", corr(x_a, x_t), {"pairs": len(ja), "k": self.k})
            z = ctx.model.prior().rsample(JOINT_SAMPLES)
            yield MetricValue(f"cca_joint{suffix}", corr(ctx.decode_means(a, z), ctx.decode_means(t, z)),
                              {"samples": JOINT_SAMPLES})
            yield MetricValue(f"cca_cross[{names[a]}->{names[t]}]", corr(x_a, self._cross(ctx, a, t, x_a)),
                              {"items": len(ja)})
            yield MetricValue(f"cca_cross[{names[t]}->{names[a]}]", corr(self._cross(ctx, t, a, x_t), x_t),
                              {"items": len(jt)})


@hookimpl
def register_metrics(register):
    register(ImageLanguageCCA())
