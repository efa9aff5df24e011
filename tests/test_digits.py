"""The embedded default dataset (version 3): shapes, pairing as in the paper (each grey digit
with 20 same-class colour partners), no train/test leakage in any rendering."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import mmbench_digits
from mmbench.datasets import pair_by_class
from mmbench.modalities import as_unit_interval


def test_shapes_and_labels(digits_data):
    for split in (digits_data.train, digits_data.test):
        assert split.pools["grey"].shape[1:] == (1, 28, 28)
        assert split.pools["colour"].shape[1:] == (3, 32, 32)
        assert split.pools["caption"].dtype == torch.int64
        assert split.pools["colour"].dtype == torch.uint8  # a quarter of float32's memory
        for pool in ("grey", "colour"):
            x = as_unit_interval(split.pools[pool])
            assert 0 <= x.min() and x.max() <= 1
        assert split.index.shape == (len(split.labels), 3)


def test_pairs_share_the_class_and_each_item_has_twenty_partners(digits_data):
    for split in (digits_data.train, digits_data.test):
        grey, colour = split.index[:, 0], split.index[:, 1]
        assert torch.equal(split.pool_labels["grey"][grey], split.labels)
        assert torch.equal(split.pool_labels["colour"][colour], split.labels)
        # a caption belongs to its colour image
        assert torch.equal(split.index[:, 2], colour)
        n = len(split.pools["grey"])
        assert torch.equal(torch.bincount(grey, minlength=n), torch.full((n,), 20))
        # a source digit's colour renderings together have its 20 partners, shared evenly
        renderings = len(split.pools["colour"]) // n
        assert len(split.pools["colour"]) == renderings * n
        per_rendering = torch.bincount(colour, minlength=len(split.pools["colour"]))
        assert torch.equal(per_rendering, torch.full_like(per_rendering, 20 // renderings))
    assert len(digits_data.train.pools["colour"]) == mmbench_digits.RENDERINGS * len(digits_data.train.pools["grey"])
    assert len(digits_data.test.pools["colour"]) == len(digits_data.test.pools["grey"])


def test_the_renderings_option_sizes_the_colour_pool_and_keeps_the_rest(plugins, digits_data, tmp_path):
    once = plugins.datasets.get("digits").configure(renderings=1, partners=4).load(tmp_path)
    assert len(once.train.pools["colour"]) == len(once.train.pools["grey"]) == len(digits_data.train.pools["grey"])
    assert once.info["renderings"] == 1 and once.derived["pool_sources"]["train"]["colour"] == once.info["source_ids"]["train"]
    # the grey digits and the split's source digits do not depend on it (the test split's colours
    # do: one random stream draws both splits' renderings, as since version 2)
    assert torch.equal(once.train.pools["grey"], digits_data.train.pools["grey"])
    assert torch.equal(once.test.pools["grey"], digits_data.test.pools["grey"])
    assert once.derived["pool_sources"]["test"] == digits_data.derived["pool_sources"]["test"]
    assert torch.equal(torch.bincount(once.train.index[:, 1]), torch.full((len(once.train.pools["colour"]),), 4))
    # each setting its own cache file: the default's data are untouched
    assert sorted(p.name for p in (tmp_path / "digits").glob("*.pt")) == [f"digits-v{mmbench_digits.VERSION}-partners4-renderings1.pt"]


def test_pair_renderings_gives_every_grey_its_partners():
    rng = np.random.default_rng(1)
    grey = np.array([0, 0, 1, 1, 1])
    colour = np.repeat(grey, 4)  # 4 renderings each
    g, c = mmbench_digits.pair_renderings(grey, colour, 6, rng)
    assert np.array_equal(grey[g.numpy()], colour[c.numpy()])
    assert np.bincount(g.numpy(), minlength=5).tolist() == [6] * 5
    # 6 partners over 4 renderings: each rendering in 1 or 2 pairs, a class's pairs all used
    counts = np.bincount(c.numpy(), minlength=20)
    assert set(counts.tolist()) <= {1, 2} and counts.sum() == 30


def test_captions_name_the_digit_and_the_colours(plugins, digits_data):
    text = plugins.datasets.get("digits").modalities[2]
    for i in range(50):
        sentence = text.render(digits_data.train.pools["caption"][i]).split()
        label = int(digits_data.train.pool_labels["caption"][i])
        assert mmbench_digits.NUMBER_WORDS[label] in sentence
        assert sum(w in mmbench_digits.PALETTE for w in sentence) == 2


def test_split_by_source_digit_without_leakage(digits_data):
    ids = digits_data.info["source_ids"]
    train, test = set(ids["train"]), set(ids["test"])
    assert not train & test and len(train | test) == 1797
    # every pool item is a rendering of its split's own source digits
    images = load_digits().images
    expected = mmbench_digits.render_grey(images[ids["test"]])
    assert torch.allclose(digits_data.test.pools["grey"], expected)
    labels = load_digits().target
    assert np.array_equal(digits_data.test.pool_labels["grey"].numpy(), labels[ids["test"]])
    # every colour rendering (and its caption) is of a source digit of its own split
    sources = digits_data.derived["pool_sources"]
    for split_name, split in (("train", digits_data.train), ("test", digits_data.test)):
        colour_sources = np.asarray(sources[split_name]["colour"])
        assert set(colour_sources) == set(ids[split_name])
        assert np.array_equal(split.pool_labels["colour"].numpy(), labels[colour_sources])
    assert not set(sources["train"]["colour"]) & test
    # and each rendering draws that very source digit: its stroke (distance to the background
    # colour) matches the digit's own 8×8 image, at some size and placement the construction
    # allows, better than any test digit's — so no test digit hides in a training rendering
    rendered = as_unit_interval(digits_data.train.pools["colour"][::400])
    stroke = (rendered - rendered[:, :, :1, :1]).abs().amax(1).flatten(1)
    own = _best_placement(stroke, images[np.asarray(sources["train"]["colour"][::400])], pairwise=False)
    best_test = _best_placement(stroke, images[ids["test"]]).amax(1)
    assert own.min() > 0.85 and bool((own > best_test).all()), (own, best_test)


def _best_placement(stroke, digits8, pairwise=True):
    """Correlation of each observed stroke [N, 1024] with each 8×8 digit drawn at every size
    (22–26 px) and shift (±1 px about the centre) digits (since version 2) uses, the best placement kept:
    [N, len(digits8)], or [N] for stroke i against digit i when not ``pairwise``."""
    small = torch.as_tensor(digits8, dtype=torch.float32)[:, None] / 16
    masks = []
    for size in range(22, 27):
        up = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                top, left = (32 - size) // 2 + dy, (32 - size) // 2 + dx
                mask = torch.zeros(len(small), 32, 32)
                mask[:, top:top + size, left:left + size] = up.clamp(0, 1)
                masks.append(mask.flatten(1))
    masks = torch.stack(masks, 1)  # [digits, placements, 1024]
    centred = lambda x: (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # noqa: E731
    a, b = centred(stroke), centred(masks)
    if not pairwise:
        return torch.einsum("np,nkp->nk", a, b[: len(a)]).amax(1) / a.shape[-1]
    return torch.einsum("np,dkp->ndk", a, b).amax(2) / a.shape[-1]


def test_the_digit_is_the_darker_colour_and_survives_a_colourless_median(digits_data, plugins):
    """Version 3: ink darker than its ground in every item, so the per-pixel median over a
    digit's colourings (the best a decoder ignorant of the colours can do under the Laplace
    likelihood) still shows the stroke; drawn either way round, as version 2 did, it fades."""
    text = plugins.datasets.get("digits").modalities[2]
    lum = {name: mmbench_digits.luminance(rgb) for name, rgb in mmbench_digits.PALETTE.items()}
    for split in (digits_data.train, digits_data.test):
        # every caption names a darker ink than its ground ...
        for tokens in split.pools["caption"]:
            fg, bg = [w for w in text.render(tokens).split() if w in mmbench_digits.PALETTE]
            assert lum[bg] - lum[fg] > 0.25, (fg, bg)
        # ... and the pixels agree: an image's 30 darkest pixels (stroke) are darker than its
        # median pixel (ground) by more than the noise makes its 30 brightest ones lighter (< 0.12)
        brightness = mmbench_digits.luminance(as_unit_interval(split.pools["colour"]).unbind(1)).flatten(1)
        darkest = brightness.sort(1).values[:, :30].mean(1)
        assert bool((brightness.median(1).values - darkest > 0.15).all())
    zero = load_digits().images[0]  # a zero: its centre is ground, its ring is stroke
    stroke = mmbench_digits.stroke_mask(zero, 24, 4, 4) > 0.8  # the pixels the stroke covers (almost) fully
    pairs = mmbench_digits.colour_pairs()
    both = pairs + [(bg, fg) for fg, bg in pairs]

    def ground_minus_stroke(chosen):
        """Luminance of the median image's ground minus its stroke's."""
        median = torch.stack([mmbench_digits.draw_colour(zero, fg, bg, 24, 4, 4) for fg, bg in chosen]).median(0).values
        brightness = mmbench_digits.luminance(median.unbind(0))
        return (brightness[~stroke].mean() - brightness[stroke].mean()).item()

    assert ground_minus_stroke(pairs) > 0.3
    assert abs(ground_minus_stroke(both)) < 0.1 * ground_minus_stroke(pairs)


def test_construction_is_deterministic(plugins, digits_data, tmp_path):
    again = plugins.datasets.get("digits").load(tmp_path)  # built afresh, not from the cache
    assert again.fingerprint() == digits_data.fingerprint()


def test_pair_by_class_with_unequal_sides():
    rng = np.random.default_rng(0)
    a = np.array([0, 0, 0, 1, 1])
    b = np.array([0, 1, 1, 1, 1, 0])
    ia, ib = pair_by_class(a, b, 3, rng)
    assert np.array_equal(a[ia.numpy()], b[ib.numpy()])
    # the larger side of each class has exactly `partners` partners per item
    assert np.bincount(ia.numpy()[a[ia.numpy()] == 0], minlength=3)[:3].tolist() == [3, 3, 3]
    assert np.bincount(ib.numpy(), minlength=6)[[1, 2, 3, 4]].tolist() == [3, 3, 3, 3]


def test_bad_option_is_a_clear_error(plugins):
    from mmbench.errors import MMBenchError

    with pytest.raises(MMBenchError, match="partners"):
        plugins.datasets.get("digits").configure(colours=3)
    with pytest.raises(MMBenchError, match="positive integer"):
        plugins.datasets.get("digits").configure(partners="many")
