"""A minimal SageMaker-runtime stand-in for benchmarks: cheap enough that the gateway, not the
upstream, is what is measured.

It answers ``InvokeEndpointWithResponseStream`` with the emulator's own bytes (vLLM-style
OpenAI chunks from ``local.scenarios.stream_steps``, framed by ``local.eventstream``), but from
a plain asyncio protocol, with every frame encoded once up front and no per-request
validation. The endpoint name is the script: ``stub-<tokens>-<delay_ms>`` streams ``tokens``
content tokens, the first after ``delay_ms`` and each next one ``delay_ms`` later (0: the whole
answer in one write).

The first content token is a timestamp pair, ``T<received>x<sent>`` (``time.monotonic_ns()``
when the request was complete, and when the first token was written), which the gateway relays
verbatim: a client on the same machine subtracts the upstream's own time from its time to
first chunk and is left with what the path to the upstream added (``bench.load``).

    python -m bench.stub --port 8091
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import ClassVar

from local.eventstream import payload_part
from local.scenarios import Scenario, Write, stream_steps

MARK = "T" + "x" * 39
"""Placeholder of the first token: ``T`` + 19 digits + ``x`` + 19 digits once filled in."""
_ENDPOINT = re.compile(rb"^POST /endpoints/stub-(\d+)-(\d+(?:\.\d+)?)/")
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
    b"x-amzn-sagemaker-content-type: text/event-stream\r\n"
    b"x-amzn-invoked-production-variant: AllTraffic\r\ntransfer-encoding: chunked\r\n\r\n"
)
_NOT_FOUND = (
    b"HTTP/1.1 400 Bad Request\r\nx-amzn-errortype: ValidationError\r\n"
    b"content-type: application/json\r\ncontent-length: 38\r\n\r\n"
    b'{"Message": "Endpoint stub not found."}'
)


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (transfer-encoding: chunked)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(frozen=True)
class Script:
    """One endpoint's answer, framed: the bytes before the first token (role chunk) with the
    first token's template, each later token, and what follows the last one."""

    opening: bytes
    first: bytes
    tokens: list[bytes]
    closing: bytes
    delay_s: float

    @classmethod
    def build(cls, tokens: int, delay_ms: float) -> Script:
        content = MARK + " t" * max(0, tokens - 1)
        steps = [s for s in stream_steps(Scenario(content=content),
                                         {"stream_options": {"include_usage": True}})
                 if isinstance(s, Write)]  # fmt: skip
        first = next(i for i, s in enumerate(steps) if s.token)
        last = max(i for i, s in enumerate(steps) if s.token)
        return cls(
            opening=b"".join(payload_part(s.data) for s in steps[:first]),
            first=steps[first].data,
            tokens=[payload_part(s.data) for s in steps[first + 1 : last + 1]],
            closing=b"".join(payload_part(s.data) for s in steps[last + 1 :]),
            delay_s=delay_ms / 1000,
        )

    def first_frame(self, received_ns: int) -> bytes:
        stamp = f"T{received_ns:019d}x{time.monotonic_ns():019d}"
        return self.opening + payload_part(self.first.replace(MARK.encode(), stamp.encode()))


class StubProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1, one request at a time per connection."""

    scripts: ClassVar[dict[bytes, Script]] = {}

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next_request()

    def _next_request(self) -> None:
        if self._busy:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self._buffer) < end + 4 + length:
            return
        received = time.monotonic_ns()
        self._buffer = self._buffer[end + 4 + length :]
        match = _ENDPOINT.match(head)
        if match is None:
            self._write(_NOT_FOUND)
            self._next_request()
            return
        script = self.scripts.get(match[0])
        if script is None:
            script = self.scripts[match[0]] = Script.build(int(match[1]), float(match[2]))
        self._busy = True
        if script.delay_s:
            asyncio.get_running_loop().create_task(self._paced(script, received))
        else:
            body = script.first_frame(received) + b"".join(script.tokens) + script.closing
            self._write(_HEAD + chunk(body) + b"0\r\n\r\n")
            self._done()

    async def _paced(self, script: Script, received: int) -> None:
        delay = script.delay_s
        await asyncio.sleep(delay)
        self._write(_HEAD + chunk(script.first_frame(received)))
        for frame in script.tokens:
            await asyncio.sleep(delay)
            if self._transport is None:
                return
            self._write(chunk(frame))
        self._write(chunk(script.closing) + b"0\r\n\r\n")
        self._done()

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _done(self) -> None:
        self._busy = False
        if self._buffer:
            self._next_request()


def wait_port(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Until the stub started as ``process`` accepts connections at ``url``."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the stub exited with {process.returncode}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"error: the stub did not start within {timeout_s} s")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
