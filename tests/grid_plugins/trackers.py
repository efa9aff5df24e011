"""Test trackers for tests/test_trackers.py, loaded with --plugins-dir (off unless picked).

``recording``: writes every call it receives, in order, to ``<run_dir>/recorded.jsonl``.
``raising``: raises in its second ``log_epoch`` call; ``raising.at`` names another method
to raise in instead.
``absent``: a tracker whose package is not installed here."""

import json
from pathlib import Path

from mmbench import hookimpl
from mmbench.api import Option, Tracker


class Recording(Tracker):
    name = "recording"
    description = "every call, in order, into <run_dir>/recorded.jsonl (a test plugin)"

    def _write(self, *call):
        with open(self.path, "a") as f:
            f.write(json.dumps(call, default=str) + "\n")

    def start(self, run_info):
        self.path = Path(run_info["run_dir"]) / "recorded.jsonl"
        self._write("start", run_info["name"], sorted(run_info))

    def log_epoch(self, epoch, values):
        self._write("log_epoch", epoch, values)

    def log_metrics(self, rows):
        self._write("log_metrics", [r["metric"] for r in rows])

    def log_artifact(self, path):
        self._write("log_artifact", str(path))

    def finish(self, status):
        self._write("finish", status)


class Raising(Tracker):
    name = "raising"
    description = "raises in its second log_epoch call, or in the method raising.at names (a test plugin)"
    options = (Option("at", "log_epoch", "the method that raises",
                      choices=("start", "log_epoch", "log_metrics", "log_artifact", "finish")),)
    epochs = 0

    def _maybe_raise(self, method):
        if method == self.option_values["at"]:
            raise RuntimeError(f"the tracker's store went away in {method}")

    def start(self, run_info):
        self._maybe_raise("start")

    def log_epoch(self, epoch, values):
        self.epochs += 1
        if self.epochs == 2:
            self._maybe_raise("log_epoch")

    def log_metrics(self, rows):
        self._maybe_raise("log_metrics")

    def log_artifact(self, path):
        self._maybe_raise("log_artifact")

    def finish(self, status):
        self._maybe_raise("finish")


class Absent(Tracker):
    name = "absent"
    description = "needs a package that is not installed (a test plugin)"

    def unavailable(self):
        return "the absent-tracker package is not installed: pip install absent-tracker"


@hookimpl
def register_trackers(register):
    register(Recording())
    register(Raising())
    register(Absent())
