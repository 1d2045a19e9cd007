"""The load client of ``bench.gateway``: concurrent streams over raw HTTP/1.1 keep-alive
connections, from processes of their own so that the client is not what limits the gateway.

Each stream's upstream is ``bench.stub``, whose first token carries the monotonic times at
which the stub had the request and wrote that token. The client records when it sent the
request and when the bytes holding that token arrived; on one machine the clocks are the same
(``CLOCK_MONOTONIC``), so

    overhead = (first token received - request sent) - (token written - request received)

is the time the path to the stub added: for a request sent straight to the stub, loopback and
parsing; through the gateway, also everything the gateway did. No pairing is needed and the
model's own time (the stub's delays) drops out.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_STAMP = re.compile(rb"T(\d{19})x(\d{19})")
_END = b"0\r\n\r\n"
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Target:
    """Where streams are opened: through the gateway (``model``) or straight at the stub."""

    host: str
    port: int
    path: str
    body: bytes

    @classmethod
    def gateway(cls, url: str, model: str) -> Target:
        host, port = _split(url)
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
        return cls(host, port, "/v1/chat/completions", json.dumps(body).encode())

    @classmethod
    def stub(cls, url: str, endpoint: str) -> Target:
        host, port = _split(url)
        body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        path = f"/endpoints/{endpoint}/invocations-response-stream"
        return cls(host, port, path, json.dumps(body).encode())

    def request(self) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
        ).encode() + self.body


def _split(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    return host, int(port)


class _Stream(asyncio.Protocol):
    """One keep-alive connection; ``begin`` starts a request and returns its future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._future: asyncio.Future[tuple[int, int, int]] | None = None
        self._sent = 0
        self._first = 0
        self._upstream = 0
        self._head = b""
        self._tail = b""
        self._done_seen = False
        self.events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def begin(self, request: bytes) -> asyncio.Future[tuple[int, int, int]]:
        assert self.transport is not None
        self._future = asyncio.get_running_loop().create_future()
        self._first = self._upstream = 0
        self._head = self._tail = b""
        self._done_seen = False
        self.events = 0
        self._sent = time.monotonic_ns()
        self.transport.write(request)
        return self._future

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        future = self._future
        if future is None or future.done():
            return
        if not self._first:
            self._head += data
            if not self._head.startswith(b"HTTP/1.1 200"):
                if b"\r\n\r\n" in self._head:
                    future.set_exception(RuntimeError(self._head[:200].decode("latin-1")))
                return
            stamp = _STAMP.search(self._head)
            if stamp is None:
                return
            self._first = now
            self._upstream = int(stamp[2]) - int(stamp[1])
            data, self._head = self._head, b""
        tail = self._tail + data
        self.events += data.count(b"\n\n") + (self._tail.endswith(b"\n") and data[:1] == b"\n")
        self._done_seen = self._done_seen or b"[DONE]" in tail
        self._tail = tail[-16:]
        if self._done_seen and self._tail.endswith(_END):
            future.set_result((self._first - self._sent, self._upstream, now - self._sent))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_exception(ConnectionError(f"connection lost: {exc}"))


async def _connect(target: Target) -> _Stream:
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(_Stream, target.host, target.port)
    return stream


async def _worker(
    target: Target, rounds: int, warmup: int, offset_s: float
) -> tuple[list[tuple[int, int, int]], int]:
    request = target.request()
    stream = await _connect(target)
    samples: list[tuple[int, int, int]] = []
    errors = 0
    await asyncio.sleep(offset_s)
    for number in range(warmup + rounds):
        try:
            sample = await asyncio.wait_for(stream.begin(request), REQUEST_TIMEOUT_S)
        except (RuntimeError, ConnectionError, TimeoutError):
            errors += 1
            if stream.transport is not None:
                stream.transport.close()
            stream = await _connect(target)
            continue
        if number >= warmup:
            samples.append(sample)
    if stream.transport is not None:
        stream.transport.close()
    return samples, errors


async def _streams(
    target: Target, streams: int, rounds: int, warmup: int, spread_s: float, seed: int
) -> tuple[list[tuple[int, int, int]], int]:
    rng = random.Random(seed)
    results = await asyncio.gather(
        *(_worker(target, rounds, warmup, rng.uniform(0, spread_s)) for _ in range(streams))
    )
    return [s for samples, _ in results for s in samples], sum(e for _, e in results)


def _process(args: tuple[Target, int, int, int, float, int]) -> tuple[list[Any], int]:
    return asyncio.run(_streams(*args))


@dataclass(frozen=True)
class LoadResult:
    ttfb_ns: list[int]
    upstream_ns: list[int]
    overhead_ns: list[int]
    total_ns: list[int]
    errors: int
    wall_s: float


def run(
    target: Target,
    *,
    streams: int,
    rounds: int,
    warmup: int = 2,
    processes: int = 1,
    spread_s: float = 0.3,
) -> LoadResult:
    """``streams`` concurrent streams (spread over ``processes`` client processes), each
    opening ``warmup + rounds`` streams back to back (the first after a random delay within
    ``spread_s``, so that they do not start in step); the warm-up ones are not recorded."""
    processes = max(1, min(processes, streams))
    shares = [streams // processes + (i < streams % processes) for i in range(processes)]
    jobs = [(target, share, rounds, warmup, spread_s, seed) for seed, share in enumerate(shares)]
    start = time.perf_counter()
    if processes == 1:
        outputs = [_process(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            outputs = pool.map(_process, jobs)
    wall = time.perf_counter() - start
    samples = [s for output, _ in outputs for s in output]
    return LoadResult(
        ttfb_ns=[s[0] for s in samples],
        upstream_ns=[s[1] for s in samples],
        overhead_ns=[s[0] - s[1] for s in samples],
        total_ns=[s[2] for s in samples],
        errors=sum(e for _, e in outputs),
        wall_s=wall,
    )


async def _relay(target: Target) -> tuple[int, int]:
    stream = await _connect(target)
    try:
        await asyncio.wait_for(stream.begin(target.request()), 300)
        return stream.events, 0
    finally:
        if stream.transport is not None:
            stream.transport.close()


def relay(target: Target) -> tuple[int, float]:
    """One long stream: (events received, seconds from request to the end)."""
    start = time.perf_counter()
    events, _ = asyncio.run(_relay(target))
    return events, time.perf_counter() - start


def sequential(target: Target, requests: int) -> int:
    """``requests`` streams one after the other on one connection; returns the errors."""
    _, errors = asyncio.run(_streams(target, 1, requests, 0, 0.0, 0))
    return errors


def percentiles(values_ns: Sequence[int], shift_ns: float = 0.0) -> dict[str, float]:
    """Median, p90, p99 in ms of ``values - shift``."""
    ordered = sorted(v - shift_ns for v in values_ns)
    if not ordered:
        return {"median": float("nan"), "p90": float("nan"), "p99": float("nan")}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1e6

    return {"median": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}
