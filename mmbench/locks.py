"""A lock per run directory, so that two runners on one results directory never train the
same cell at once (two shells, two machines sharing a folder, two Ray workers).

The lock is ``flock`` on ``<run_dir>/.lock``. The kernel releases it when its holder dies —
even by SIGKILL — so a crashed runner never blocks a cell forever. The file also records who
holds it (pid, host, start time) for the message the other runner prints; a clean release
empties it, so a file that still names a holder nobody locks is a *stale* lock left by a
runner that died, and the next runner says so as it takes the cell over.

The lock file is never deleted: deleting a flock-ed path lets a waiter lock the old inode
while a newcomer locks a new one, and both would believe they hold the cell. ``flock`` works
on local file systems and on NFSv4 (Linux maps it to byte-range locks there).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = ".lock"


@dataclass
class Holder:
    """Who holds (or last held) a run's lock, as the lock file records it."""

    pid: int | None
    host: str | None
    since: str | None

    def __str__(self) -> str:
        if self.pid is None:
            return "another runner"
        return f"pid {self.pid} on {self.host or 'an unknown host'}" + (f" since {self.since}" if self.since else "")


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return Holder(data.get("pid"), data.get("host"), data.get("since"))
    except (ValueError, AttributeError):
        return Holder(None, None, None)


class RunLock:
    """The lock of one run directory. ``acquire(wait=False)`` returns False when another runner
    holds it (``holder`` then says who); ``stale`` is the holder of a lock left by a dead runner
    that this acquisition took over."""

    def __init__(self, run_dir: Path, name: str = LOCK_NAME):
        """``name``: the lock file's name in ``run_dir`` (other shared work, e.g. a cached judge,
        locks its own file in its own folder the same way)."""
        self.path = Path(run_dir) / name
        self.fd: int | None = None
        self.holder: Holder | None = None
        self.stale: Holder | None = None

    def acquire(self, wait: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.holder = _read_holder(fd)
            if not wait:
                os.close(fd)
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(fd)
            raise
        # We hold it now. Content left behind means its last holder died without releasing.
        self.stale = _read_holder(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty file: released cleanly, nobody to report
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

