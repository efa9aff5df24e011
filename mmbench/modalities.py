"""Reusable modality families for dataset plugins: images with a Laplace likelihood and token
sequences with a categorical likelihood. Architectures follow MMVAE Appendix F."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .api import Modality
from .distributions import clamped_laplace_log_prob

PIXEL_EPS = 1e-6


class PosteriorHead(nn.Module):
    """Two linear heads on shared features: raw loc and raw scale, concatenated (the last layer
    of every encoder; a modality's own encoder may end with it too)."""

    def __init__(self, features: int, latent_dim: int):
        super().__init__()
        self.out = nn.Linear(features, 2 * latent_dim)

    def forward(self, h):
        return self.out(h)


def as_unit_interval(x: Tensor) -> Tensor:
    """Images stored as uint8 (0..255) as floats in [0, 1]; float images pass unchanged.

    Datasets may keep large image pools as uint8 — a quarter of float32's memory (SVHN's 73,257
    training images: 225 MB instead of 900 MB) — and every network, likelihood and rendering of
    :class:`ImageModality` converts a batch as it arrives."""
    return x.to(torch.get_default_dtype()) / 255 if x.dtype == torch.uint8 else x


class _PixelNet(nn.Sequential):
    """A network over images that first applies :func:`as_unit_interval` (as a wrapper, not a
    layer, so that parameter names are those of the plain nn.Sequential)."""

    def forward(self, x):
        return super().forward(as_unit_interval(x))


class BackgroundContrast(nn.Module):
    """Appends a colour-blind channel: each pixel's distance from the image's median colour.

    For images whose digit is drawn in one colour on another, the median colour is the
    background's, so this channel is the stroke whatever the colours — the shared content a
    network would otherwise spend many steps learning to separate from the private colours."""

    def forward(self, x):
        background = x.flatten(2).median(dim=2).values[..., None, None]
        return torch.cat([x, (x - background).abs().sum(1, keepdim=True)], dim=1)


def _conv_out(size: int, layers: int) -> int:
    for _ in range(layers):
        size = (size + 2 - 4) // 2 + 1
    return size


class ImageModality(Modality):
    """Images in [0, 1] with a Laplace likelihood of fixed scale (0.75 in MMVAE).

    ``arch`` "mlp": 784-400-D (MMVAE's MNIST); "conv": 32-64-128 convolutions (its SVHN).
    ``decoder_arch`` overrides it for the decoder alone: the decoder runs on M·K·B latents a
    step, the encoder on B items, so a CPU budget affords a conv encoder before a conv decoder."""

    def __init__(self, name: str, shape, *, arch: str = "mlp", decoder_arch: str | None = None,
                 hidden: int = 400, scale: float = 0.75, weight: float = 1.0, channels=(32, 64, 128),
                 background_contrast: bool = False):
        self.name, self.shape, self.arch, self.hidden = name, tuple(shape), arch, hidden
        self.background_contrast = background_contrast
        self.decoder_arch = decoder_arch or arch
        self.scale, self.weight, self.channels = scale, weight, tuple(channels)

    def describe(self):
        archs = self.arch if self.arch == self.decoder_arch else f"{self.arch} encoder, {self.decoder_arch} decoder"
        return f"{self.name} {tuple(self.shape)} image, Laplace(scale {self.scale}), λ={self.weight:.3g}, {archs}"

    @property
    def pixels(self) -> int:
        return math.prod(self.shape)

    def encoder(self, latent_dim):
        if self.arch == "mlp":
            return _PixelNet(nn.Flatten(), nn.Linear(self.pixels, self.hidden), nn.ReLU(),
                             PosteriorHead(self.hidden, latent_dim))
        c, h, _ = self.shape
        layers, cin = self._input_layers(), c + int(self.background_contrast)
        for cout in self.channels:
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.ReLU()]
            cin = cout
        side = _conv_out(h, len(self.channels))
        return _PixelNet(*layers, nn.Flatten(), PosteriorHead(cin * side * side, latent_dim))

    def _input_layers(self) -> list[nn.Module]:
        return [BackgroundContrast()] if self.background_contrast else []

    def decoder(self, latent_dim):
        if self.decoder_arch == "mlp":
            return nn.Sequential(nn.Linear(latent_dim, self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, self.pixels), nn.Sigmoid(),
                                 nn.Unflatten(1, self.shape))
        c, h, _ = self.shape
        side = _conv_out(h, len(self.channels))
        chans = list(reversed(self.channels))
        layers = [nn.Linear(latent_dim, chans[0] * side * side), nn.ReLU(), nn.Unflatten(1, (chans[0], side, side))]
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(chans[-1], c, 4, 2, 1), nn.Sigmoid()]
        return nn.Sequential(*layers)

    def log_likelihood(self, out, x):
        return clamped_laplace_log_prob(as_unit_interval(x), out, self.scale, PIXEL_EPS, 1 - PIXEL_EPS, len(self.shape))

    def decode_mean(self, out):
        return out

    def classifier(self, num_classes):
        c, h, _ = self.shape if len(self.shape) == 3 else (1, *self.shape)
        side = _conv_out(h, 2)
        return _PixelNet(
            nn.Unflatten(1, (c, h, h)) if len(self.shape) != 3 else nn.Identity(), *self._input_layers(),
            nn.Conv2d(c + int(self.background_contrast), 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def judge_features(self, x):
        """The pixels in [0, 1] — for a modality with ``background_contrast``, that channel alone
        (the stroke whatever the colours, which a linear read-out cannot separate itself)."""
        x = as_unit_interval(x)
        if self.background_contrast:
            x = BackgroundContrast()(x if x.dim() == 4 else x.unsqueeze(1))[:, -1:]
        return x.flatten(1)

    def render(self, x: Tensor):
        img = as_unit_interval(x.detach().cpu()).float().clamp(0, 1)
        if img.dim() == 3:
            img = img.permute(1, 2, 0)
        else:
            img = img.unsqueeze(-1)
        if img.shape[-1] == 1:
            img = img.expand(*img.shape[:2], 3)
        return (img.numpy() * 255).round().astype(np.uint8)


class TextModality(Modality):
    """Token sequences [L] (int64) with a categorical likelihood per position.

    Positions after the first ``<eos>`` (padding) do not count in the likelihood.
    ``vocab`` lists the words; index 0 is ``<pad>`` and index 1 is ``<eos>``."""

    PAD, EOS = 0, 1

    def __init__(self, name: str, vocab: list[str], max_len: int, *, embed: int = 64,
                 hidden: int = 256, weight: float = 1.0):
        assert vocab[0] == "<pad>" and vocab[1] == "<eos>", "vocab must start with <pad>, <eos>"
        self.name, self.vocab, self.max_len = name, list(vocab), max_len
        self.shape, self.embed, self.hidden, self.weight = (max_len,), embed, hidden, weight

    def encoder(self, latent_dim):
        return nn.Sequential(
            nn.Embedding(len(self.vocab), self.embed, padding_idx=self.PAD), nn.Flatten(),
            nn.Linear(self.embed * self.max_len, self.hidden), nn.ReLU(), PosteriorHead(self.hidden, latent_dim),
        )

    def decoder(self, latent_dim):
        return nn.Sequential(
            nn.Linear(latent_dim, self.hidden), nn.ReLU(),
            nn.Linear(self.hidden, self.max_len * len(self.vocab)),
            nn.Unflatten(1, (self.max_len, len(self.vocab))),
        )

    def log_likelihood(self, out, x):
        logp = F.log_softmax(out, dim=-1)
        target = x.expand(out.shape[:-1])
        token_logp = torch.gather(logp, -1, target.unsqueeze(-1)).squeeze(-1)
        return (token_logp * self.mask(x)).sum(-1)

    def mask(self, x: Tensor) -> Tensor:
        """1 for tokens up to and including the first <eos>, 0 for the padding after it."""
        return (x != self.PAD).to(torch.get_default_dtype())

    def decode_mean(self, out):
        return out.argmax(-1)

    def describe(self):
        return f"{self.name} ({self.max_len} tokens) text, categorical over {len(self.vocab)} words, λ={self.weight:.3g}"

    def classifier(self, num_classes):
        return _BagOfWords(len(self.vocab), num_classes)

    def judge_features(self, x):
        """Word counts [B, vocab] of the sentence (the words before the first <eos>)."""
        counts = torch.zeros(len(x), len(self.vocab), device=x.device)
        return counts.scatter_add_(1, x, words_before_stop(x))

    def render(self, x: Tensor) -> str:
        return self.detokenise(x.tolist())

    def tokenise(self, sentence: str) -> list[int]:
        lookup = {w: i for i, w in enumerate(self.vocab)}
        ids = [lookup[w] for w in sentence.split()][: self.max_len - 1] + [self.EOS]
        return ids + [self.PAD] * (self.max_len - len(ids))

    def detokenise(self, ids) -> str:
        words = []
        for i in ids:
            if i in (self.EOS, self.PAD):
                break
            words.append(self.vocab[i])
        return " ".join(words)


class _BagOfWords(nn.Module):
    """The caption judge: mean word embedding up to <eos>, then a linear layer."""

    def __init__(self, vocab_size: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 64)
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, tokens):
        keep = words_before_stop(tokens)
        h = (self.embed(tokens) * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
        return self.out(h)


def words_before_stop(tokens: Tensor) -> Tensor:
    """1.0 at the words of a sentence, 0.0 from its first <eos> or <pad> on: a decoded caption's
    tokens after that are not part of the sentence."""
    stop = (tokens == TextModality.EOS) | (tokens == TextModality.PAD)
    return (stop.cumsum(-1) == 0).to(torch.get_default_dtype())
