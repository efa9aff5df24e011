"""CUB captions as token sequences (MMVAE §4.3 and Appendix F): a vocabulary of the words seen
more than 3 times in the training captions, sentences cut to 32 tokens ending in ``<eos>`` and
padded with ``<pad>``, and a convolutional sentence encoder and decoder over learnt word
embeddings."""

from __future__ import annotations

import re
from collections import Counter

import torch
from torch import nn

from mmbench.errors import MMBenchError
from mmbench.modalities import PosteriorHead, TextModality

MAX_LEN = 32
MIN_COUNT = 3  # a word enters the vocabulary when seen more than this many times
UNK = "<unk>"
SPECIALS = ("<pad>", "<eos>", UNK)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def words(sentence: str) -> list[str]:
    """Lower-cased words, with punctuation as words of its own ("white, black." -> 4 words)."""
    return _WORD.findall(sentence.lower())


def build_vocab(sentences, min_count: int = MIN_COUNT) -> list[str]:
    """<pad>, <eos>, <unk>, then the words seen more than ``min_count`` times, most frequent
    first (ties alphabetically, so the vocabulary is a function of the sentences alone)."""
    counts = Counter(w for s in sentences for w in words(s))
    kept = sorted((w for w, c in counts.items() if c > min_count and w not in SPECIALS), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *kept]


class _SentenceEncoder(nn.Module):
    """tokens [B, L] -> embeddings [B, E, L] -> three stride-2 convolutions -> posterior params."""

    def __init__(self, vocab_size: int, max_len: int, embed: int, channels, latent_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=TextModality.PAD)
        layers, cin = [], embed
        for cout in channels:
            layers += [nn.Conv1d(cin, cout, 4, 2, 1), nn.BatchNorm1d(cout), nn.ReLU()]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.head = PosteriorHead(cin * (max_len >> len(channels)), latent_dim)

    def forward(self, tokens):
        h = self.convs(self.embed(tokens).transpose(1, 2))
        return self.head(h.flatten(1))


class _SentenceDecoder(nn.Module):
    """z [N, D] -> transposed convolutions back to L positions -> logits over the vocabulary."""

    def __init__(self, vocab_size: int, max_len: int, embed: int, channels, latent_dim: int):
        super().__init__()
        chans = list(reversed(channels))
        self.start = (chans[0], max_len >> len(channels))
        self.project = nn.Sequential(nn.Linear(latent_dim, chans[0] * self.start[1]), nn.ReLU())
        layers = []
        for cin, cout in zip(chans, [*chans[1:], embed]):
            layers += [nn.ConvTranspose1d(cin, cout, 4, 2, 1), nn.BatchNorm1d(cout), nn.ReLU()]
        self.deconvs = nn.Sequential(*layers)
        self.words = nn.Linear(embed, vocab_size)

    def forward(self, z):
        h = self.deconvs(self.project(z).view(-1, *self.start))
        return self.words(h.transpose(1, 2))  # [N, L, V]


class CaptionModality(TextModality):
    """Captions with a categorical likelihood per token (up to and including ``<eos>``) and the
    convolutional sentence networks of MMVAE Appendix F (our 1-D rendering of them).

    The vocabulary comes from the training captions (:func:`build_vocab`): a caption modality
    is made with it, ``vocab=...``, from the loaded data (``Cub.modalities_for``). Without one
    (the dataset's declared modalities, before any data) it only describes itself; asking it
    for networks is an error."""

    def __init__(self, name: str = "caption", max_len: int = MAX_LEN, *, vocab: list[str] | None = None,
                 embed: int = 128, channels=(256, 512, 512), weight: float = 1.0):
        if max_len % (1 << len(channels)):
            raise ValueError(f"max_len {max_len} must be divisible by {1 << len(channels)}")
        if vocab is not None and tuple(vocab[:3]) != SPECIALS:
            raise ValueError(f"a caption vocabulary starts with {', '.join(SPECIALS)}")
        super().__init__(name, list(vocab if vocab is not None else SPECIALS), max_len, embed=embed, weight=weight)
        self.channels = tuple(channels)
        self.loaded = vocab is not None
        self._lookup = {w: i for i, w in enumerate(self.vocab)}

    def _require_vocab(self):
        if not self.loaded:
            raise MMBenchError(f"the '{self.name}' vocabulary is built from the training captions: build networks from "
                               "the modalities of the loaded data, dataset.modalities_for(dataset.load(DIR))")

    def encoder(self, latent_dim):
        self._require_vocab()
        return _SentenceEncoder(len(self.vocab), self.max_len, self.embed, self.channels, latent_dim)

    def decoder(self, latent_dim):
        self._require_vocab()
        return _SentenceDecoder(len(self.vocab), self.max_len, self.embed, self.channels, latent_dim)

    def classifier(self, num_classes):
        return None  # CUB is judged by image–caption CCA (MMVAE Table 4), not by a classifier

    def describe(self):
        size = f"{len(self.vocab)} words" if self.loaded else f"the words seen > {MIN_COUNT} times in training captions"
        return (f"{self.name} ({self.max_len} tokens) text, categorical over {size}, conv sentence networks, "
                f"λ={self.weight:.3g}")

    def tokenise(self, sentence: str) -> list[int]:
        unk = self._lookup[UNK]
        ids = [self._lookup.get(w, unk) for w in words(sentence)][: self.max_len - 1] + [self.EOS]
        return ids + [self.PAD] * (self.max_len - len(ids))

    def tokenise_all(self, sentences) -> torch.Tensor:
        return torch.tensor([self.tokenise(s) for s in sentences], dtype=torch.int64).reshape(-1, self.max_len)
