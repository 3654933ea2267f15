"""A readers-writer lock: many concurrent searches, one writer at a time, writers not starved."""

from __future__ import annotations

import threading
from types import TracebackType


class RWLock:
    def __init__(self) -> None:
        # A search takes the read lock on every call, so the uncontended path is one plain
        # mutex (a C-level ``with``); the condition on the same mutex is only for waiting.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        # Guards are plain objects (not generator context managers), built once.
        self._read = _ReadGuard(self)
        self._write = _WriteGuard(self)

    def read(self) -> _ReadGuard:
        return self._read

    def write(self) -> _WriteGuard:
        return self._write

    def acquire_read(self) -> None:
        with self._mutex:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if not self._readers and self._waiting_writers:  # only writers wait for readers
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._mutex:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._mutex:
            self._writer = False
            self._cond.notify_all()


class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._mutex:  # acquire_read, inlined: one Python call per search less
            while lock._writer or lock._waiting_writers:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        lock = self._lock
        with lock._mutex:  # release_read, inlined
            lock._readers -= 1
            if not lock._readers and lock._waiting_writers:
                lock._cond.notify_all()


class _WriteGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_write()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self._lock.release_write()
