"""A small HTTP/1.1 client on asyncio: pooled keep-alive connections, one request at a time
each, responses parsed by httptools (llhttp, already bundled as uvicorn's parser).

Built for one caller (the SageMaker runtime stream, ``upstream_async``): it writes a request
and hands every parser event to a :class:`ResponseHandler`, on the event loop, as the bytes
arrive; there is no thread, no per-request task and no buffering here. What it does not do:
proxies (the caller falls back to botocore when one is configured), redirects, retries,
``Expect: 100-continue``, HTTP/2.

Connections are reused only when the previous response was read to its end and both sides
allow it, and never after :data:`MAX_IDLE_S` idle seconds (below the 60 s idle timeout of
AWS's load balancers, so a server closing an idle connection never races its reuse); before
reuse, a connection the server has closed, or that has unread bytes, is dropped (what urllib3's
``is_connection_dropped`` checks before botocore reuses a pooled connection).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import select
import socket
import ssl
from collections import deque
from typing import Protocol

from httptools import HttpParserError, HttpResponseParser

MAX_IDLE_S = 50.0
"""Idle connections older than this are closed rather than reused."""
MAX_IDLE_CONNECTIONS = 64
"""Per pool (one per event loop); botocore's ``max_pool_connections`` was 64 here too."""


class ResponseHandler(Protocol):
    """Receives one response's parser events (httptools' callback names) and its failure."""

    def on_status(self, status: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...

    def on_failure(self, error: BaseException | None, timed_out: bool) -> None:
        """The connection broke (``error``: the cause, None for a clean EOF) or no byte came
        for the read timeout (``timed_out``) before the response was complete."""


class Connection(asyncio.Protocol):
    """One keep-alive connection. ``send`` starts a response; the handler gets its events."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._parser: HttpResponseParser | None = None
        self._handler: ResponseHandler | None = None
        self._read_timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._paused = False
        self.idle_since = 0.0
        self.closed = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._pool.open_now += 1

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        self._last_read = self._loop.time()
        try:
            parser.feed_data(data)
        except HttpParserError as exc:
            self._fail(exc, timed_out=False)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        self._pool.forget(self)
        if self._handler is not None:
            self._fail(exc, timed_out=False)

    # --- used by the caller ------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, handler: ResponseHandler, read_timeout: float) -> None:
        """Write one request; ``handler`` receives the response (``read_timeout``: the longest
        silence allowed between two bytes, from now until the response is complete)."""
        assert self.transport is not None
        self._handler = handler
        self._parser = HttpResponseParser(handler)
        self._read_timeout = read_timeout
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + read_timeout, self._check_idle)
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)

    def status_code(self) -> int:
        """The response's status (once its headers are complete)."""
        return self._parser.get_status_code() if self._parser is not None else 0

    def keep_alive(self) -> bool:
        """Whether the connection may carry another request (once the response is complete)."""
        return self._parser is not None and self._parser.should_keep_alive()

    def finish(self, *, reusable: bool) -> None:
        """The handler is done with the response: back to the pool, or closed."""
        self._stop_timer()
        self._handler = None
        self._parser = None
        if self._paused:
            self.resume_reading()
        if reusable and not self.closed:
            self._pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Close at once, discarding unsent and unread bytes (the server sees the peer go)."""
        self._handler = None
        self._stop_timer()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def pause_reading(self) -> None:
        """Flow control: stop reading while the consumer is behind (not counted as silence)."""
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._last_read = self._loop.time()
            self.transport.resume_reading()

    def dropped(self) -> bool:
        """Closed by the server (or something unread arrived) while idle in the pool."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return True
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    # --- internals ---------------------------------------------------------------------------

    def _check_idle(self) -> None:
        self._timer = None
        if self._handler is None:
            return
        now = self._loop.time()
        if self._paused:
            self._last_read = now
        deadline = self._last_read + self._read_timeout
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._check_idle)
            return
        self._fail(None, timed_out=True)

    def _fail(self, error: BaseException | None, *, timed_out: bool) -> None:
        handler = self._handler
        self.abort()
        self._parser = None
        if handler is not None:
            handler.on_failure(error, timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ConnectTimedOutError(Exception):
    """No connection (TCP and TLS) within the connect timeout."""


class Pool:
    """Keep-alive connections to one origin, for one event loop (``ssl_context``: None for
    plain HTTP; may be a future, resolved before the first connection)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | concurrent.futures.Future[ssl.SSLContext] | None,
        connect_timeout: float,
    ) -> None:
        self.loop = loop
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._idle: deque[Connection] = deque()
        self.opened = 0
        """Connections made so far (tests and benchmarks read it)."""
        self.open_now = 0
        """Connections currently open, idle or busy."""

    async def acquire(self) -> Connection:
        """An idle connection still usable, else a new one.

        Raises :class:`ConnectTimedOutError`, ``ssl.SSLError`` or ``OSError`` (refused, unreachable,
        name not resolved).
        """
        idle = self._idle
        now = self.loop.time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if now - connection.idle_since < MAX_IDLE_S and not connection.dropped():
                return connection
            connection.abort()
        return await self._connect()

    def release(self, connection: Connection) -> None:
        connection.idle_since = self.loop.time()
        self._idle.append(connection)
        while len(self._idle) > MAX_IDLE_CONNECTIONS:
            self._idle.popleft().abort()

    def forget(self, connection: Connection) -> None:
        self.open_now -= 1
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    def idle(self) -> int:
        return len(self._idle)

    def in_use(self) -> int:
        """Connections carrying a request now (open and not idle)."""
        return self.open_now - len(self._idle)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()

    async def _connect(self) -> Connection:
        if isinstance(self._ssl, concurrent.futures.Future):  # still being built at start-up
            self._ssl = await asyncio.wrap_future(self._ssl)
        connection = Connection(self)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.loop.create_connection(
                    lambda: connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise ConnectTimedOutError(f"{self._host}:{self._port}") from None
        self.opened += 1
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return connection
