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

    def train(net, data, name, device):
        calls.append(name)
        time.sleep(seconds)  # long enough for a second asker to arrive while this one trains
        with torch.no_grad():
            next(net.parameters()).fill_(0.25)
        return net.eval(), accuracy

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
    assert [acc for _, acc in results] == [0.5] * 3
    assert all(torch.all(next(net.parameters()) == 0.25) for net, _ in results)


def test_a_corrupt_cache_entry_is_retrained(plugins, digits_data, tmp_path, monkeypatch):
    calls = _counting_trainer(monkeypatch, seconds=0)
    dataset = plugins.datasets.get("digits")
    judges.get_judge(dataset, digits_data, 0, tmp_path)
    (entry,) = (tmp_path / "judges").glob("*.pt")
    judges.get_judge(dataset, digits_data, 0, tmp_path)
    assert len(calls) == 1  # the cached one was used
    entry.write_bytes(b"not a checkpoint")
    _, acc = judges.get_judge(dataset, digits_data, 0, tmp_path)
    assert len(calls) == 2 and acc == 0.5
    assert torch.load(entry, weights_only=True)["test_acc"] == 0.5  # rewritten whole
