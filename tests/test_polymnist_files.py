"""The published PolyMNIST, read from a tiny tree in its exact layout (PolyMNIST/{train,test}/
m0..m4/<index>.<label>.png, real PNG files): tuples by file name, labels from the name, one-line
errors when the files are absent or do not match; and the generated set that used to carry the
name, now `polydigits`, whose old runs stay readable under their new name."""

import json
import shutil

import pytest
import torch
from PIL import Image

from mmbench.errors import DataError, MMBenchError
from mmbench.testing import check_dataset

from conftest import run_cli

LABELS = {"train": [3, 3, 7, 0], "test": [7, 1]}  # the label of each item; its index counts within the label


def _names(labels):
    seen, names = {}, []
    for label in labels:
        names.append(f"{seen.get(label, 0)}.{label}.png")
        seen[label] = seen.get(label, 0) + 1
    return names


def _pixel(m, name):
    """An item's colour: which modality and which file it is, readable back from the tensor."""
    index, label, _ = name.split(".")
    return (40 * m + 1, 10 * int(index) + 2, 20 * int(label) + 3)


def write_tree(root, folder="PolyMNIST", modalities=5):
    for split, labels in LABELS.items():
        for m in range(modalities):
            directory = root / folder / split / f"m{m}"
            directory.mkdir(parents=True)
            for name in reversed(_names(labels)):  # written out of order: the reader sorts
                Image.new("RGB", (28, 28), _pixel(m, name)).save(directory / name)
    return root


@pytest.fixture
def dataset(plugins):
    return plugins.datasets.get("polymnist")


def test_items_of_one_name_form_a_tuple_with_the_label_the_name_carries(dataset, tmp_path):
    data = dataset.load(write_tree(tmp_path))
    for split, labels in LABELS.items():
        s = getattr(data, split)
        order = sorted(_names(labels), key=lambda n: (int(n.split(".")[1]), int(n.split(".")[0])))
        assert s.labels.tolist() == [int(n.split(".")[1]) for n in order]
        for j, m in enumerate(f"m{k}" for k in range(5)):
            pool = s.pools[m]
            assert pool.dtype == torch.uint8 and pool.shape == (len(labels), 3, 28, 28)
            items = pool[s.index[:, j]]
            assert [tuple(items[n, :, 5, 5].tolist()) for n in range(len(order))] == [_pixel(j, n) for n in order]
            assert torch.equal(s.pool_labels[m][s.index[:, j]], s.labels)
    cached = dataset.load(tmp_path)  # from the cache now: the same data
    assert torch.equal(cached.train.pools["m4"], data.train.pools["m4"])


def test_the_tiny_tree_passes_the_dataset_contract(dataset, tmp_path, single_thread):
    write_tree(tmp_path)
    check_dataset(dataset.configure(modalities=2), data_dir=tmp_path)


def test_moPoEs_folder_name_and_fewer_modalities_read_the_same_files(dataset, tmp_path):
    data = dataset.configure(modalities=3).load(write_tree(tmp_path, "MMNIST"))
    assert sorted(data.train.pools) == ["m0", "m1", "m2"]
    with pytest.raises(MMBenchError, match="polymnist.modalities must be in 2 .. 5"):
        dataset.configure(modalities=6)


def test_absent_files_say_where_to_get_them_in_one_line(dataset, tmp_path):
    with pytest.raises(DataError) as caught:
        dataset.load(tmp_path)
    text = str(caught.value)
    assert "\n" not in text and str(tmp_path.resolve()) in text
    assert "zenodo.org/record/4899160" in text and "PolyMNIST/train/m0 .. m4/" in text


def test_files_that_do_not_match_across_modalities_are_named(dataset, tmp_path):
    write_tree(tmp_path)
    (tmp_path / "PolyMNIST" / "test" / "m2" / "0.7.png").unlink()
    with pytest.raises(DataError, match=r"test/m2 and .*test/m0 do not hold the same items .*0\.7\.png"):
        dataset.load(tmp_path)
    shutil.rmtree(tmp_path / "PolyMNIST")
    write_tree(tmp_path)
    (tmp_path / "PolyMNIST" / "train" / "m1" / "0.3.png").rename(tmp_path / "PolyMNIST" / "train" / "m1" / "zero.png")
    with pytest.raises(DataError, match="zero.png is not named <index>.<label>.png"):
        dataset.load(tmp_path)


# ----------------------------------------------------------------------------- polydigits, formerly polymnist
def test_an_old_polymnist_run_is_read_as_polydigits_and_not_taken_for_polymnist(tmp_path, monkeypatch, capsys,
                                                                                single_thread):
    from mmbench.cli import main

    out, home = tmp_path / "runs", {"MMBENCH_HOME": str(tmp_path / "home")}
    proc = run_cli("run", "--dataset", "polydigits", "--modalities", "2", "--posteriors", "poe", "--epochs", "1",
                   "--data-option", "per_class=5", "--data-option", "partners=1", "--metrics", "classifier_acc",
                   "--out", str(out), "--quiet", env=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # what a run of the generated set looked like before the rename: the same files, the old name
    old = out / "polymnist" / "poe" / "seed-0"
    shutil.move(str(out / "polydigits"), str(out / "polymnist"))
    info = json.loads((old / "run.json").read_text())
    info["spec"]["dataset"] = "polymnist"
    (old / "run.json").write_text(json.dumps(info))

    monkeypatch.setenv("MMBENCH_HOME", home["MMBENCH_HOME"])
    assert main(["leaderboard", str(out)]) == 0
    board = capsys.readouterr()
    assert "| polydigits | poe" in board.out and "| polymnist" not in board.out
    assert "1 run(s) recorded as 'polymnist' are of the dataset now named 'polydigits'" in board.err
    assert main(["evaluate", str(old), "--metrics", "classifier_acc", "--device", "cpu"]) == 0  # polydigits' judges
    assert main(["run", "--dataset", "polymnist", "--posteriors", "poe", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 2
    assert "holds a run of the dataset now named 'polydigits' (recorded as 'polymnist')" in capsys.readouterr().err


def test_only_runs_of_the_generated_construction_are_renamed(plugins):
    from mmbench.renames import current_name

    generated = {"spec": {"dataset": "polymnist"}, "data": {"seed": 20210503, "styles": ["plain", "rings"]}}
    files = {"spec": {"dataset": "polymnist"}, "data": {"source": "/data/PolyMNIST", "version": 1}}
    assert current_name(generated, plugins) == "polydigits"
    assert current_name(files, plugins) == "polymnist"
    assert current_name({"spec": {"dataset": "digits"}, "data": {"seed": 20210503, "styles": []}}, plugins) == "digits"
