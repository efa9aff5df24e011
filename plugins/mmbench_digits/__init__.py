"""The embedded default dataset ``digits``: three paired modalities built from the 1,797
handwritten digits that scikit-learn bundles, with no download.

- ``grey``: an MNIST-like 1×28×28 image of a source digit;
- ``colour``: an SVHN-like 3×32×32 image of another source digit of the same class, drawn
  in a random dark colour on a random lighter background, near the centre (as SVHN's crops
  are centred on their digit), resized and noisy;
- ``caption``: an English sentence describing that colour image (its digit and colours).

Shared content is the digit; private content is colour, size and handwriting. As in the
MMVAE paper's MNIST–SVHN, each grey image is paired with 20 same-class colour images. Source
digits are split into train and test first, so no test digit, in any modality, is seen in
training.

Version 2 (issue 17; measurements in results/digits/README.md): each training source digit
is rendered in colour ``RENDERINGS`` = 10 times (the test split keeps one rendering per
source digit), digits are centred (size 22–26 px, shift ±1 px) instead of placed anywhere,
and the caption templates share one word order, so that a caption decoded position by
position is a sentence. With one rendering per digit and free shifts (version 1) the colour
judge could not pass 0.84 and cross generations into colour were background-coloured blobs.
The epoch keeps version 1's size: each grey digit in 20 pairs, each rendering in 2.

Version 3: the digit is always the darker of its two colours (ink on paper), not either way
round. With both polarities equally likely, the per-pixel median of a digit's colourings — the
best a decoder that knows the digit but not its colours can output under the Laplace
likelihood — is flat: version 2's colour judge read it at 0.62 (version 3's at 0.69), and that
was where version 2's models' grey→colour coherence stopped (0.62–0.69; moe-tight's 0.80 the one
exception). With one polarity the same median keeps the stroke and is read at 0.99
(results/digits/README.md; ``benchmarks/colourless_median.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmbench import hookimpl
from mmbench.api import Dataset, Option, PairedData, Split
from mmbench.datasets import load_cached, stratified_split
from mmbench.modalities import ImageModality, TextModality

VERSION = 3  # bump when the construction changes: it is part of the cache key
SEED = 20191208  # the data are one fixed set, whatever a run's seed
PARTNERS = 20
RENDERINGS = 10  # colour renderings of each training source digit (the test split: 1)
TEST_FRACTION = 0.2

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PALETTE = {
    "red": (0.90, 0.12, 0.12), "green": (0.10, 0.70, 0.20), "blue": (0.15, 0.25, 0.90),
    "yellow": (0.95, 0.88, 0.10), "white": (0.95, 0.95, 0.95), "black": (0.05, 0.05, 0.05),
    "purple": (0.55, 0.20, 0.75), "orange": (1.00, 0.55, 0.05),
}
# One word order, several words: a caption decoder predicts every position independently, and
# with templates of different orders its most likely word per position mixes them into
# non-sentences ("a zero zero on a on background", version 1). Any mix of these is a sentence.
TEMPLATES = [
    "a {fg} {digit} on a {bg} background",
    "a {fg} {digit} on a {bg} square",
    "the {fg} {digit} on the {bg} field",
    "this {fg} {digit} over a {bg} ground",
]
MAX_LEN = 12


def _vocabulary() -> list[str]:
    words = set(NUMBER_WORDS) | set(PALETTE)
    for template in TEMPLATES:
        words |= {w for w in template.split() if not w.startswith("{")}
    return ["<pad>", "<eos>", *sorted(words)]


def luminance(rgb) -> float:
    """Perceived brightness of an (r, g, b) in [0, 1] (ITU-R BT.601 weights)."""
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def colour_pairs() -> list[tuple[str, str]]:
    """(foreground, background) pairs that a person (and a small network) can tell apart, the
    digit the darker of the two (version 3; see the module's docstring): 18 pairs."""
    return [(f, b) for f in PALETTE for b in PALETTE
            if luminance(PALETTE[b]) - luminance(PALETTE[f]) > 0.25]


def render_grey(digits8: np.ndarray) -> torch.Tensor:
    """8×8 digits (0..16) -> [N, 1, 28, 28] in [0, 1]: upscaled to 20×20, centred, as MNIST."""
    x = torch.as_tensor(digits8, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(x, (4, 4, 4, 4)).clamp(0, 1)


def stroke_mask(digit8: np.ndarray, size: int, top: int, left: int) -> torch.Tensor:
    """One 8×8 digit (0..16) -> [32, 32] ink coverage in [0, 1]: upscaled to ``size`` px at (top, left)."""
    stroke = torch.as_tensor(digit8, dtype=torch.float32)[None, None] / 16.0
    stroke = F.interpolate(stroke, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    mask = torch.zeros(32, 32)
    mask[top:top + size, left:left + size] = stroke.clamp(0, 1)
    return mask


def draw_colour(digit8: np.ndarray, fg: str, bg: str, size: int, top: int, left: int) -> torch.Tensor:
    """One 8×8 digit (0..16) -> [3, 32, 32] in [0, 1], noiseless: its stroke_mask in colour
    ``fg`` on ``bg`` (names in PALETTE)."""
    mask = stroke_mask(digit8, size, top, left)
    fg_rgb = torch.tensor(PALETTE[fg])[:, None, None]
    bg_rgb = torch.tensor(PALETTE[bg])[:, None, None]
    return bg_rgb * (1 - mask) + fg_rgb * mask


def render_colour(digits8: np.ndarray, rng: np.random.Generator):
    """8×8 digits -> [N, 3, 32, 32] uint8 colour images, and the (fg, bg) colour names of each.

    The digit is 22–26 px and within ±1 px of the centre."""
    pairs = colour_pairs()
    n = len(digits8)
    images = torch.empty(n, 3, 32, 32)
    names = []
    for i in range(n):
        size = int(rng.integers(22, 27))
        top, left = ((32 - size) // 2 + int(v) for v in rng.integers(-1, 2, size=2))
        top, left = (min(max(v, 0), 32 - size) for v in (top, left))
        fg, bg = pairs[int(rng.integers(len(pairs)))]
        noise = torch.as_tensor(rng.normal(0, 0.05, size=(3, 32, 32)), dtype=torch.float32)
        images[i] = (draw_colour(digits8[i], fg, bg, size, top, left) + noise).clamp(0, 1)
        names.append((fg, bg))
    return (images * 255).round().to(torch.uint8), names


def pair_renderings(grey_labels, colour_labels, partners: int, rng: np.random.Generator):
    """Same-class pairs (grey, colour) in which every grey item has exactly ``partners``
    colour partners, and the colour items of a class share that class's pairs evenly (with
    R renderings per source digit, each rendering is in about partners / R pairs, and each
    source digit's renderings together in ``partners``). Returns two int64 tensors.
    """
    grey_labels, colour_labels = np.asarray(grey_labels), np.asarray(colour_labels)
    grey_col, colour_col = [], []
    for c in np.unique(grey_labels):
        greys, colours = np.flatnonzero(grey_labels == c), np.flatnonzero(colour_labels == c)
        n = len(greys) * partners
        grey_col += [rng.permutation(greys) for _ in range(partners)]
        rounds = -(-n // len(colours))
        colour_col.append(np.concatenate([rng.permutation(colours) for _ in range(rounds)])[:n])
    return torch.as_tensor(np.concatenate(grey_col)), torch.as_tensor(np.concatenate(colour_col))


def caption(label: int, fg: str, bg: str, rng: np.random.Generator) -> str:
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(fg=fg, bg=bg, digit=NUMBER_WORDS[label])


class Digits(Dataset):
    name = "digits"
    description = "scikit-learn's 1,797 handwritten digits as grey image, colour image and caption (embedded)"
    num_classes = 10
    # 7 epochs: the README's run (install included) ends within 15 minutes on 2 CPU cores;
    # on an H100, 3 seeds each showed 7 epochs as coherent as 8 and 6 weaker (notes of issue 2).
    defaults = dict(latent_dim=20, K=2, epochs=7, batch_size=128, lr=1e-3)
    by_default = True
    # The colour pool holds 10 renderings per source digit (14,380 images): 40 epochs of it
    # would be 9,000 steps, minutes of a 15-minute budget; 2,000 steps (about 9 epochs) judge
    # it at 0.99. Grey and caption (1,437 items: 900 steps for 40 epochs) are not cut.
    judge_steps = 2000
    options = (Option("partners", PARTNERS, "same-class partners per item (20 as in the MMVAE paper; its code used 30)",
                      low=1),
               Option("renderings", RENDERINGS, "colour renderings of each training source digit (10 since version 2; "
                      "1 draws each once, as version 1 did: a quicker, weaker colour modality; the test split keeps "
                      "one per digit, in other colours than the default's)", low=1))

    def __init__(self):
        self.vocab = _vocabulary()
        # λ balances the modalities' likelihood scales, as MMVAE weights MNIST by 3·32·32/784.
        self._modalities = [
            ImageModality("grey", (1, 28, 28), arch="mlp", weight=3 * 32 * 32 / (28 * 28)),
            ImageModality("colour", (3, 32, 32), arch="conv", decoder_arch="mlp", weight=1.0,
                          background_contrast=True),
            TextModality("caption", self.vocab, MAX_LEN, weight=20.0),
        ]

    @property
    def modalities(self):
        return self._modalities

    @property
    def partners(self) -> int:
        return self.option_values["partners"]

    @property
    def renderings(self) -> int:
        return self.option_values["renderings"]

    def load(self, data_dir: Path, download: bool = False) -> PairedData:
        path = Path(data_dir) / "digits" / f"digits-v{VERSION}-partners{self.partners}-renderings{self.renderings}.pt"
        return load_cached(path, self._build)

    def _build(self) -> PairedData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images8, labels = bunch.images, bunch.target.astype(np.int64)
        rng = np.random.default_rng(SEED)
        train_ids, test_ids = stratified_split(labels, TEST_FRACTION, rng)
        text = self._modalities[2]
        splits = []
        sources = {}
        for split, ids, renderings in (("train", train_ids, self.renderings), ("test", test_ids, 1)):
            y = torch.as_tensor(labels[ids])
            grey = render_grey(images8[ids])
            # The colour pool: each source digit of the split drawn `renderings` times; the
            # colour image of a pair shows a same-class source digit (its own only by chance).
            colour_source = np.repeat(ids, renderings)
            colour_y = torch.as_tensor(labels[colour_source])
            colour, colours = render_colour(images8[colour_source], rng)
            captions = torch.tensor([text.tokenise(caption(int(c), fg, bg, rng))
                                     for c, (fg, bg) in zip(colour_y, colours)])
            grey_idx, colour_idx = pair_renderings(y, colour_y, self.partners, rng)
            index = torch.stack([grey_idx, colour_idx, colour_idx], dim=1)  # a caption belongs to its image
            splits.append(Split(
                pools={"grey": grey, "colour": colour, "caption": captions},
                pool_labels={"grey": y, "colour": colour_y, "caption": colour_y},
                index=index, labels=y[grey_idx],
            ))
            sources[split] = {"grey": ids.tolist(), "colour": colour_source.tolist()}
        # Each pool item's source digit stays out of the recorded info (every run.json copies
        # the info; this list alone is 89 KB): it is each split's source_ids repeated
        # `renderings` times, kept in `derived` for whoever checks the split.
        info = {"source_ids": {"train": train_ids.tolist(), "test": test_ids.tolist()},
                "renderings": self.renderings, "partners": self.partners, "seed": SEED, "version": VERSION}
        return PairedData(*splits, info=info, derived={"pool_sources": sources})


@hookimpl
def register_datasets(register):
    register(Digits())
