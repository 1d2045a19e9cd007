"""Which backends a request tries, in which order: weighted canary, fallback order, cooldown."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable

from llm_gateway.contract import Backend, Route


class BackendHealth:
    """Consecutive failures per backend, and cooldowns, for this function instance only."""

    def __init__(
        self, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def cooling(self, backend: Backend) -> bool:
        return self._until.get(backend.endpoint_name, 0.0) > self._clock()

    def record_success(self, backend: Backend) -> None:
        with self._lock:
            self._failures.pop(backend.endpoint_name, None)
            self._until.pop(backend.endpoint_name, None)

    def record_failure(self, backend: Backend) -> None:
        with self._lock:
            count = self._failures.get(backend.endpoint_name, 0) + 1
            self._failures[backend.endpoint_name] = count
            if count >= self._threshold:
                self._until[backend.endpoint_name] = self._clock() + self._cooldown_s
                self._failures[backend.endpoint_name] = 0


def _weighted_pick(backends: list[Backend], point: float) -> Backend:
    """The backend whose cumulative weight band contains ``point`` (0 ≤ point < total)."""
    for backend in backends:
        point -= backend.weight or 0
        if point < 0:
            return backend
    return backends[-1]


def _sticky_point(consumer: str, route: Route, total: int) -> float:
    digest = hashlib.sha256(f"{route.model}\0{consumer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


def attempt_order(
    route: Route, *, consumer: str, rng: random.Random, health: BackendHealth
) -> list[Backend]:
    """Backends to try, first choice first, at most ``route.max_attempts`` of them.

    Cooled-down backends are skipped unless every backend is cooling, in which case they are
    tried anyway (a request should not fail only because of earlier ones).
    """
    weighted = [b for b in route.backends if b.weight]
    if weighted:
        total = sum(b.weight or 0 for b in weighted)
        point = _sticky_point(consumer, route, total) if route.sticky else rng.random() * total
        first = _weighted_pick(weighted, point)
    else:
        first = route.backends[0]
    order = [first, *(b for b in route.backends if b is not first)]
    healthy = [b for b in order if not health.cooling(b)]
    return (healthy or order)[: route.max_attempts]
