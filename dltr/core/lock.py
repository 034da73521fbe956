"""The store's single-writer lock: ``fcntl.flock`` on ``STORE/.writer.lock``.

The lock is re-entrant within one process (a feature writer that is open while the same
process writes a result table does not deadlock on itself); a second process gets
:class:`StoreLockedError` at once, never a wait.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from dltr.core.exceptions import StoreLockedError
from dltr.core.layout import LOCK_NAME

_HELD: dict[str, list] = {}  # realpath of the store -> [fd, count]
_GUARD = threading.Lock()


class WriterLock:
    """Hold the store's writer lock between ``acquire()`` and ``release()`` (or as a context)."""

    def __init__(self, root: str | Path, purpose: str = "write"):
        self.root = Path(root)
        self.key = os.path.realpath(self.root)
        self.purpose = purpose
        self._held = False

    def acquire(self) -> WriterLock:
        if self._held:
            return self
        with _GUARD:
            entry = _HELD.get(self.key)
            if entry is None:
                path = self.root / LOCK_NAME
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise StoreLockedError(
                        f"{self.root}: another writer holds the store's write lock ({holder}); "
                        f"cannot {self.purpose} now - wait for it to finish, readers are unaffected"
                    ) from None
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} ({self.purpose})".encode())
                entry = _HELD[self.key] = [fd, 0]
            entry[1] += 1
        self._held = True
        return self

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with _GUARD:
            entry = _HELD[self.key]
            entry[1] -= 1
            if entry[1] == 0:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
                del _HELD[self.key]

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace") or "unknown process"
    except OSError:
        return "unknown process"


def try_lock(root: str | Path, purpose: str) -> WriterLock | None:
    """The writer lock if free now, else None (used by readers that would like to refresh)."""
    try:
        return WriterLock(root, purpose).acquire()
    except StoreLockedError:
        return None
