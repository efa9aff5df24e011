"""The real-data datasets (MMVAE §4: MNIST–SVHN, CUB images ↔ captions) and the generated
M-modality set, loaded through the same code users run, from small files in the real formats."""

import numpy as np
import pytest
import torch

from mmbench.errors import DataError

from conftest import run_cli


# ----------------------------------------------------------------------------- polymnist
@pytest.fixture(scope="module")
def polymnist(plugins, tmp_path_factory):
    dataset = plugins.datasets.get("polymnist").configure(modalities=4, per_class=12, partners=3)
    return dataset, dataset.load(tmp_path_factory.mktemp("poly"))


def test_polymnist_tuples_share_the_class_and_each_item_has_its_partners(polymnist):
    dataset, data = polymnist
    names = [m.name for m in dataset.modalities]
    assert names == ["m0", "m1", "m2", "m3"]
    for split in (data.train, data.test):
        assert split.index.shape == (len(split.labels), 4)
        for j, name in enumerate(names):
            pool = split.pools[name]
            assert pool.shape[1:] == (3, 28, 28) and 0 <= pool.min() and pool.max() <= 1
            assert torch.equal(split.pool_labels[name][split.index[:, j]], split.labels)
            assert torch.equal(torch.bincount(split.index[:, j], minlength=len(pool)), torch.full((len(pool),), 3))
        # tuples hold different renderings: the modalities do not repeat one image
        assert not torch.allclose(split.pools["m0"], split.pools["m1"])


def test_polymnist_modality_pools_do_not_depend_on_m(plugins, polymnist, tmp_path):
    _, four = polymnist
    two = plugins.datasets.get("polymnist").configure(modalities=2, per_class=12, partners=3).load(tmp_path)
    assert torch.equal(two.train.pools["m1"], four.train.pools["m1"])
    assert two.info["source_ids"] == four.info["source_ids"]
    assert not set(four.info["source_ids"]["train"]) & set(four.info["source_ids"]["test"])


def test_polymnist_options_are_checked(plugins):
    poly = plugins.datasets.get("polymnist")
    assert len(poly.configure(modalities="8").modalities) == 8
    for bad in (dict(modalities=1), dict(modalities=9), dict(modalities="x"), dict(colour=1)):
        with pytest.raises(DataError):
            poly.configure(**bad)


def test_polymnist_runs_from_the_cli(tmp_path):
    out = tmp_path / "runs"
    proc = run_cli("run", "--dataset", "polymnist", "--modalities", "5", "--posteriors", "moe,poe", "--epochs", "1",
                   "--data-option", "per_class=8", "--data-option", "partners=1", "--metrics",
                   "latent_acc,coherence_cross", "--eval-items", "40", "--out", str(out), "--quiet",
                   env={"MMBENCH_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for posterior in ("moe", "poe"):
        rows = (out / "polymnist" / posterior / "seed-0" / "metrics.jsonl").read_text()
        assert "coherence_cross[m0->m4]" in rows and "latent_acc[m4]" in rows
