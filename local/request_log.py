"""The thread-safe log every stand-in keeps of what it received (the tests read it from
another thread than the server's)."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Recorded = TypeVar("Recorded")


class RequestLog(Generic[Recorded]):
    """Requests in arrival order; safe to record and read from different threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []

    def record(self, request: Recorded) -> None:
        """Append one request to the log."""
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[Recorded]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Empty the log."""
        with self._lock:
            self._requests.clear()
