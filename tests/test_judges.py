"""The coherence judges' cache: keyed by content, a corrupt entry retrained rather than used,
and workers that ask at once train one judge between them (the others wait, then load it)."""

import threading
import time

import torch

import mmbench.judges as judges


def _counting_trainer(monkeypatch, accuracy=0.5, seconds=0.3):
    """Stands in for the 40-epoch fit (the cache logic is under test): counts its calls and
    marks the net it 'trained' so that a load can be told from a fresh net."""
    calls = []

    def train(net, dataset, data, name, device, kind):
        calls.append(name)
        time.sleep(seconds)  # long enough for a second asker to arrive while this one trains
        with torch.no_grad():
            next(net.parameters()).fill_(0.25)
        return judges.Judge(net.eval(), accuracy, judges.content_hash(net.state_dict()))

    monkeypatch.setattr(judges, "_train", train)
    return calls


def test_concurrent_askers_share_one_training(plugins, digits_data, tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch)
    dataset = plugins.datasets.get("digits")
    results = []
    askers = [threading.Thread(target=lambda: results.append(judges.get_judge(dataset, digits_data, 0, tmp_path)))
              for _ in range(3)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert calls == ["grey"]  # one trained; two waited and loaded its judge
    assert [j.test_acc for j in results] == [0.5] * 3
    assert all(torch.all(next(j.net.parameters()) == 0.25) for j in results)
    assert len({j.digest for j in results}) == 1


def test_a_corrupt_cache_entry_is_retrained(plugins, digits_data, tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch, seconds=0)
    dataset = plugins.datasets.get("digits")
    judges.get_judge(dataset, digits_data, 0, tmp_path)
    (entry,) = (tmp_path / "judges").glob("*.pt")
    judges.get_judge(dataset, digits_data, 0, tmp_path)
    assert len(calls) == 1  # the cached one was used
    entry.write_bytes(b"not a checkpoint")
    assert judges.get_judge(dataset, digits_data, 0, tmp_path).test_acc == 0.5 and len(calls) == 2
    assert torch.load(entry, weights_only=True)["test_acc"] == 0.5  # rewritten whole


def test_a_dataset_caps_the_network_judges_steps_and_the_cap_is_in_the_key(plugins, digits_data, tmp_path):
    """judge_steps stops the network judge's training after that many optimisation steps (the
    optimiser's own step count says so), and judges under another cap are other files."""
    dataset = plugins.datasets.get("digits")
    net = judges.untrained(dataset, digits_data, 1)
    x, y = digits_data.train.pools["colour"][:640], digits_data.train.pool_labels["colour"][:640]
    counted = []
    hook = net.register_forward_pre_hook(lambda *_: counted.append(1))
    judges.FAMILIES["cnn"].fit(net, x, y, max_steps=7)
    hook.remove()
    assert len(counted) == 7  # one forward pass per step (10 an epoch): stopped at the cap, not at 400
    assert judges.FAMILIES["cnn"].recipe_for(dataset)["max_steps"] == dataset.judge_steps == 2000
    capped = judges.judge_path(dataset, digits_data, 1, net, tmp_path)

    class Uncapped(type(dataset)):
        judge_steps = None

    uncapped = judges.judge_path(Uncapped(), digits_data, 1, net, tmp_path)
    assert capped != uncapped and "max_steps" not in judges.FAMILIES["cnn"].recipe_for(Uncapped())


# ----------------------------------------------------------------------------- the second family
import numpy as np
import pytest

from mmbench import judge_files, ridge_judge
from mmbench.errors import MMBenchError


def test_ridge_read_out_is_the_closed_form_at_the_held_out_best_penalty():
    """fit_ridge against a transcription with scikit-learn's Ridge: for each penalty, fit on the
    items not held out, count the held-out items classified right; at the best (ties: the larger
    penalty), the read-out fitted on all items."""
    from sklearn.linear_model import Ridge

    gen = torch.Generator().manual_seed(3)
    y = torch.arange(300) % 3
    x = torch.randn(300, 6, generator=gen) + 4 * torch.nn.functional.one_hot(y, 6).float()
    net = ridge_judge.RandomFeatureRidge(lambda t: t, 6, 3, features=40, seed=0)
    ridge_judge.fit_ridge(net, x, y)  # 2-D items: no shifted copies

    h = net.hidden(x).double().numpy()
    targets = np.eye(3)[y.numpy()]
    held = np.arange(300) % ridge_judge.RECIPE["holdout_every"] == 0
    scores = []
    for penalty in ridge_judge.RECIPE["penalties"]:
        gram = h[~held].T @ h[~held]
        fit = Ridge(alpha=penalty * np.diag(gram).mean(), fit_intercept=False).fit(h[~held], targets[~held])
        scores.append(((fit.predict(h[held]).argmax(1) == y.numpy()[held]).sum(), penalty))
    best = max(scores)[1]
    full = Ridge(alpha=best * np.diag(h.T @ h).mean(), fit_intercept=False).fit(h, targets)
    assert np.allclose(net.beta.double().numpy(), full.coef_.T, atol=1e-5)
    assert (net(x).argmax(1) == y).float().mean() > 0.8


@pytest.mark.parametrize("shape, copies", [((1438, 3, 32, 32), 25), ((5000, 1, 28, 28), 9),
                                           ((60000, 1, 28, 28), 1), ((1438, 12), 1)])
def test_images_are_fitted_on_shifted_copies_within_the_row_budget(shape, copies):
    shifts = ridge_judge.shifts_for(torch.zeros(shape, dtype=torch.uint8))
    assert len(shifts) == copies and (0, 0) in shifts
    assert shape[0] * len(shifts) <= max(ridge_judge.RECIPE["max_rows"], shape[0])


@pytest.fixture(scope="module")
def exported(plugins, tmp_path_factory):
    """A small polydigits set, its four judges (2 modalities × 2 families) trained into a cache
    once, and exported from it: (dataset, data, cache, export folder, manifest entries)."""
    import shutil

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("judged")
    dataset = plugins.datasets.get("polydigits").configure(modalities=2, per_class=5, partners=1)
    data = dataset.load(root / "data")
    entries = judge_files.export_judges(dataset, data, root / "lab-a", root / "shared")
    torch.set_num_threads(torch_threads)
    yield dataset, data, root / "lab-a", root / "shared", entries
    shutil.rmtree(root)


def test_the_two_families_are_different_judges_kept_under_their_own_names(exported, monkeypatch):
    dataset, data, cache, _, entries = exported
    monkeypatch.setattr(judges, "_train", lambda *args: pytest.fail("a cached judge was trained again"))
    cnn, ridge = (judges.get_judge(dataset, data, 0, cache, kind) for kind in ("cnn", "ridge"))
    assert isinstance(ridge.net, ridge_judge.RandomFeatureRidge) and not isinstance(cnn.net, ridge_judge.RandomFeatureRidge)
    assert ridge.digest != cnn.digest and ridge.test_acc > 0.3  # chance: 0.1
    files = sorted(p.name for p in (cache / "judges").glob("*.pt"))
    assert len(files) == 4 and sum("-m0-ridge-" in f for f in files) == 1
    assert {(e["modality"], e["family"]): e["sha256"] for e in entries}[("m0", "ridge")] == ridge.digest


def test_judges_exported_and_imported_elsewhere_are_the_same_classifiers(exported, tmp_path, monkeypatch):
    dataset, data, cache, shared, entries = exported
    assert sorted((e["modality"], e["family"]) for e in entries) == [("m0", "cnn"), ("m0", "ridge"),
                                                                     ("m1", "cnn"), ("m1", "ridge")]
    judge_files.import_judges(shared, tmp_path / "lab-b")
    monkeypatch.setattr(judges, "_train", lambda *args: pytest.fail("an imported judge was trained again"))
    names = [mod.name for mod in dataset.modalities]
    for e in entries:
        judge = judges.get_judge(dataset, data, names.index(e["modality"]), tmp_path / "lab-b", e["family"])
        assert judge.digest == e["sha256"]
        assert judge.test_acc == e["test_acc"]


def test_an_altered_judge_file_is_refused_with_one_line(exported, tmp_path):
    import shutil

    shared = shutil.copytree(exported[3], tmp_path / "shared")
    victim = shared / next(e["file"] for e in exported[4] if e["family"] == "ridge")
    state = torch.load(victim, weights_only=True)
    state["net"]["beta"] += 1e-3
    torch.save(state, victim)
    with pytest.raises(MMBenchError, match=f"{victim.name} does not match its sha256") as caught:
        judge_files.import_judges(shared, tmp_path / "elsewhere")
    assert "\n" not in str(caught.value) and not (tmp_path / "elsewhere" / "judges").exists()
