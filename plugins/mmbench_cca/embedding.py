"""Sentence embeddings for image–language coherence: a FastText model (gensim) fitted on the
training captions, a sentence being the mean of its word vectors (MMVAE §4.2, Table 4).

Only the vectors of the text modality's own vocabulary are ever needed, so what is fitted and
cached is that table — keyed by a content hash of the training sentences, the vocabulary, the
FastText settings and the gensim version — not gensim's whole model.

References: Bojanowski, Grave, Joulin, Mikolov. Enriching Word Vectors with Subword
Information. TACL 2017. Shi et al., NeurIPS 2019 (MMVAE), §4.2.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from mmbench.datasets import atomic_torch_save
from mmbench.errors import MMBenchError

#: 300-d vectors as in the paper. gensim's default bucket (2,000,000 hashed n-grams) is meant
#: for web-scale corpora and costs 2.4 GB at 300-d; caption vocabularies need far fewer.
FASTTEXT = dict(vector_size=300, window=5, min_count=1, epochs=10, bucket=100_000, min_n=3, max_n=6, seed=0)


class SentenceEmbedding:
    """Word vectors of a vocabulary; a sentence (list of words) maps to their mean."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.lookup = {w: i for i, w in enumerate(words)}
        self.vectors = np.asarray(vectors, dtype=np.float64)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __call__(self, sentences: list[list[str]]) -> np.ndarray:
        """[N, dim]: each sentence's mean word vector (zeros for an empty sentence)."""
        out = np.zeros((len(sentences), self.dim))
        for i, words in enumerate(sentences):
            ids = [self.lookup[w] for w in words if w in self.lookup]
            if ids:
                out[i] = self.vectors[ids].mean(0)
        return out


def _key(sentences: list[list[str]], words: list[str], settings: dict) -> str:
    try:
        gensim_version = version("gensim")  # not an import: a cache hit never loads gensim
    except PackageNotFoundError:
        gensim_version = None
    h = hashlib.sha256(json.dumps([settings, gensim_version, words], sort_keys=True).encode())
    for s in sentences:
        h.update((" ".join(s) + "\n").encode())
    return h.hexdigest()[:16]


def fit_sentence_embedding(sentences: list[list[str]], words: list[str], cache_dir: Path | None = None,
                           **overrides) -> SentenceEmbedding:
    """FastText fitted on ``sentences``; the vectors of ``words`` (seen or not: FastText builds
    unseen words from character n-grams). Cached under ``cache_dir/fasttext`` by content hash."""
    settings = {**FASTTEXT, **overrides}
    path = Path(cache_dir) / "fasttext" / f"{_key(sentences, words, settings)}.pt" if cache_dir else None
    if path is not None and path.exists():
        try:
            state = torch.load(path, weights_only=True)
            return SentenceEmbedding(state["words"], state["vectors"].numpy())
        except Exception:
            pass  # a corrupt cache entry is fitted again, never used
    try:
        from gensim.models import FastText
    except ImportError:
        raise MMBenchError("image–language CCA needs gensim: pip install 'mmbench[text]'") from None
    # One worker: gensim's multi-threaded training is not reproducible.
    model = FastText(sentences=sentences, workers=1, **settings)
    vectors = np.stack([model.wv[w] for w in words])
    if path is not None:
        atomic_torch_save({"words": list(words), "vectors": torch.from_numpy(vectors)}, path)
    return SentenceEmbedding(words, vectors)
