"""The embedded default dataset: shapes, pairing as in the paper, no train/test leakage."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import mmbench_digits
from mmbench.datasets import pair_by_class


def test_shapes_and_labels(digits_data):
    for split in (digits_data.train, digits_data.test):
        assert split.pools["grey"].shape[1:] == (1, 28, 28)
        assert split.pools["colour"].shape[1:] == (3, 32, 32)
        assert split.pools["caption"].dtype == torch.int64
        for pool in ("grey", "colour"):
            x = split.pools[pool]
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
        assert torch.equal(torch.bincount(colour, minlength=n), torch.full((n,), 20))


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
