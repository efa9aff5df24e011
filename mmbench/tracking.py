"""The experiment trackers of one run, called together: a tracker that raises is named on stderr,
its error kept for run.json's ``tracker_errors``, and it is not called again in that run; the
others and the run go on."""

from __future__ import annotations

import sys
from pathlib import Path


def resolve_trackers(plugins, names: list[str] | None) -> list:
    """The trackers ``names`` (None: none), each typo refused."""
    return [plugins.trackers.get(n) for n in names or []]


def require_available(trackers) -> None:
    """A one-line MMBenchError for the first (configured) tracker that cannot run here, so that
    a grid fails before it creates anything."""
    from .errors import MMBenchError

    for tracker in trackers:
        why = tracker.unavailable()
        if why:
            raise MMBenchError(f"tracker '{tracker.name}' cannot run here: {why}")


class RunTrackers:
    """Configured trackers following one run. Each call goes to every tracker still working."""

    def __init__(self, trackers, plugins=None):
        self.trackers = list(trackers)
        self.plugins = plugins
        #: {tracker: "log_epoch raised ValueError: ..."}, for run.json
        self.errors: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _call(self, method: str, *args) -> None:
        for tracker in self.trackers:
            if tracker.name in self.errors:
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a tracker must never fail a run
                self.errors[tracker.name] = f"{method} raised {type(exc).__name__}: {exc}"
                origin = (f" of {self.plugins.trackers.provenance(tracker.name)}"
                          if self.plugins is not None and tracker.name in self.plugins.trackers else "")
                print(f"mmbench: warning: tracker '{tracker.name}'{origin} {self.errors[tracker.name]}; "
                      "it follows this run no further, the run goes on", file=sys.stderr)

    def start(self, run_info: dict, history: list[dict] = ()) -> None:
        """The run begins; a resumed run's earlier epochs are logged again, so that each tracker
        holds them all."""
        self._call("start", run_info)
        for record in history:
            self.log_epoch(record)

    def log_epoch(self, record: dict) -> None:
        """One record of run.json's ``history``."""
        values = {k: v for k, v in record.items() if k != "epoch"}
        self._call("log_epoch", int(record["epoch"]), values)

    def finish(self, status: str, rows: list[dict] = (), artifact_paths: list[Path] = ()) -> None:
        """The metrics and artifacts of an evaluated run (none for a failed one), then the end."""
        if rows:
            self._call("log_metrics", list(rows))
        for path in artifact_paths:
            self._call("log_artifact", Path(path))
        self._call("finish", status)
