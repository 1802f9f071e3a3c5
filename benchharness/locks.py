"""Lock files that tell two runs sharing a results directory not to compute the same thing.

A lock is a file created with O_EXCL holding the owner's host, pid and a heartbeat time that a
background thread refreshes. A lock whose owner died is taken over: on the same host when the pid
no longer exists, anywhere when the heartbeat is older than ``stale_after`` seconds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FileLock:
    """An exclusive lock on ``path`` (a file that exists while the lock is held)."""

    def __init__(self, path: Path, heartbeat: float = 10.0, stale_after: float = 120.0):
        self.path = Path(path)
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            return None

    def is_stale(self) -> bool:
        """True when the current holder is gone (dead pid here, or heartbeat too old)."""
        owner = self._owner()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if owner is None:  # being written right now, or garbage: judge by age only
            return age > self.stale_after
        if owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1))):
            return True
        return age > self.stale_after

    def holder(self) -> dict | None:
        """Who holds the lock now (``host``, ``pid``, ``since``), or None when it is free or
        its holder is gone."""
        if not self.path.exists() or self.is_stale():
            return None
        return self._owner() or {"host": "?", "pid": "?", "since": None}

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; never blocks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.is_stale():
                    # rename first so that two processes cannot both delete and re-create it
                    grave = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
                    try:
                        os.rename(self.path, grave)
                        grave.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                return False
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
            self._start_heartbeat()
            return True
        return False

    def acquire(self, poll: float = 1.0, timeout: float | None = None) -> bool:
        """Wait until the lock is taken (or ``timeout`` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(self.heartbeat):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Give the lock back."""
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=1)
            self._stop = None
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
