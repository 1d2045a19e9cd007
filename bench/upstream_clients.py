"""The SageMaker runtime client alone, three ways, in one process against ``bench.stub``:

* ``threaded``: a boto3 client call on a thread per stream (``upstream.UpstreamStream``, what
  the gateway used before, kept as the proxy fallback);
* ``aiobotocore``: aiobotocore's async client (botocore's pipeline on aiohttp);
* ``native``: ``upstream_async`` (botocore's signer and event-stream checks on an asyncio
  HTTP/1.1 connection), what ``SageMakerInvoker.from_settings`` opens now.

Per client: CPU time of this process per short stream (8 tokens, no delay; sequential), the time
from ``open`` to the first part and the CPU per stream with ``--streams`` concurrent paced
streams (32 tokens 10 ms apart), and the relay rate of one long stream (parts per second).

aiobotocore pins botocore to a narrow range (3.10.0: botocore < 1.43.118) that the project's
venv does not have, so this runs in a venv of its own, e.g.::

    python3 -m venv /tmp/aiobench-venv
    /tmp/aiobench-venv/bin/pip install aiobotocore==3.10.0 httptools==0.9.0 pydantic==2.14.3 boto3
    PYTHONPATH=lambda:. /tmp/aiobench-venv/bin/python -m bench.upstream_clients

Without aiobotocore installed, that client is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench.stub import wait_port
from llm_gateway.contract import Backend
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker

ROOT = Path(__file__).resolve().parent.parent

BODY = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "stream": True}).encode()
Opener = Callable[[str], AsyncIterator[bytes]]


def _backend(endpoint: str) -> Backend:
    return Backend(name="b", endpoint_name=endpoint, format="openai", max_tokens_default=8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def stub() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "bench.stub", "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _settings() -> Settings:
    routes = {"routes": [{"model": "m", "backends": [_backend("stub-8-0").model_dump()]}]}
    return Settings.from_env({"LLM_GATEWAY_ROUTES": json.dumps(routes)})


@asynccontextmanager
async def threaded(url: str) -> AsyncIterator[Opener]:
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=128, tcp_keepalive=True)  # fmt: skip
    invoker = SageMakerInvoker(boto3.client("sagemaker-runtime", config=config))

    yield _opener(invoker)


def _opener(invoker: SageMakerInvoker) -> Opener:
    """The payload parts of one stream on ``endpoint`` through ``invoker``."""

    async def parts(endpoint: str) -> AsyncIterator[bytes]:
        stream = invoker.open(_backend(endpoint), BODY)
        try:
            async for part in stream:
                yield part
        finally:
            stream.close()

    return parts


@asynccontextmanager
async def native(url: str) -> AsyncIterator[Opener]:
    invoker = SageMakerInvoker.from_settings(_settings())
    assert invoker.runtime is not None

    yield _opener(invoker)


@asynccontextmanager
async def aiobotocore(url: str) -> AsyncIterator[Opener]:
    session = importlib.import_module("aiobotocore.session").get_session()
    config = importlib.import_module("aiobotocore.config").AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=128
    )
    async with session.create_client("sagemaker-runtime", config=config) as client:

        async def parts(endpoint: str) -> AsyncIterator[bytes]:
            response = await client.invoke_endpoint_with_response_stream(
                EndpointName=endpoint, Body=BODY, ContentType="application/json", Accept="*/*"
            )
            body = response["Body"]
            try:
                async for event in body:
                    part = event.get("PayloadPart")
                    if part is not None:
                        yield part["Bytes"]
            finally:
                body._raw_stream.close()

        yield parts


CLIENTS = {"threaded": threaded, "aiobotocore": aiobotocore, "native": native}


async def _one(open_parts: Opener, endpoint: str) -> tuple[float, int]:
    start = time.perf_counter()
    first = 0.0
    events = 0
    async for part in open_parts(endpoint):
        if not first:
            first = time.perf_counter() - start
        events += part.count(b"\n\n")
    return first, events


async def measure(kind: str, url: str, *, sequential: int, streams: int, rounds: int,
                  relay_tokens: int) -> dict[str, Any]:  # fmt: skip
    async with CLIENTS[kind](url) as open_parts:
        for _ in range(20):
            await _one(open_parts, "stub-8-0")
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(sequential):
            await _one(open_parts, "stub-8-0")
        seq_cpu = (time.process_time() - cpu) / sequential * 1e3
        seq_wall = (time.perf_counter() - wall) / sequential * 1e3

        firsts: list[float] = []
        rng = random.Random(1)

        async def worker() -> None:
            await asyncio.sleep(rng.uniform(0, 0.3))
            for _ in range(rounds):
                first, _ = await _one(open_parts, "stub-32-10")
                firsts.append(first - 0.010)  # the stub's first-token delay

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(streams)))
        conc_cpu = (time.process_time() - cpu) / len(firsts) * 1e3
        await _one(open_parts, f"stub-{relay_tokens}-0")
        start = time.perf_counter()
        _, events = await _one(open_parts, f"stub-{relay_tokens}-0")
        relay = events / (time.perf_counter() - start)
    firsts.sort()
    return {
        "sequential_cpu_ms": seq_cpu,
        "sequential_wall_ms": seq_wall,
        "concurrent_first_part_ms": {
            "median": statistics.median(firsts) * 1e3,
            "p99": firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))] * 1e3,
        },
        "concurrent_cpu_ms_per_stream": conc_cpu,
        "relay_parts_per_s": relay,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--relay-tokens", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    kinds = [k for k in args.clients.split(",") if k]
    if "aiobotocore" in kinds and importlib.util.find_spec("aiobotocore") is None:
        print("aiobotocore is not installed here: skipped", file=sys.stderr)
        kinds.remove("aiobotocore")
    results: dict[str, Any] = {}
    with stub() as url:
        os.environ.update(
            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=url, AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        )  # fmt: skip
        for kind in kinds:
            options = {"sequential": args.sequential, "streams": args.streams,
                       "rounds": args.rounds, "relay_tokens": args.relay_tokens}  # fmt: skip
            results[kind] = asyncio.run(measure(kind, url, **options))
    import botocore

    print(f"botocore {botocore.__version__}, Python {sys.version.split()[0]}")
    print(f"{'client':12} {'CPU/stream':>11} {'wall/stream':>12} {'first part med':>15} "
          f"{'p99':>8} {'CPU/stream':>11} {'relay':>10}")  # fmt: skip
    print(f"{'':12} {'sequential':>11} {'sequential':>12} {f'{args.streams} concurrent':>15} "
          f"{'':>8} {'concurrent':>11} {'parts/s':>10}")  # fmt: skip
    for kind, r in results.items():
        c = r["concurrent_first_part_ms"]
        print(f"{kind:12} {r['sequential_cpu_ms']:9.3f}ms {r['sequential_wall_ms']:10.3f}ms "
              f"{c['median']:13.2f}ms {c['p99']:6.2f}ms {r['concurrent_cpu_ms_per_stream']:9.3f}ms "
              f"{r['relay_parts_per_s']:10,.0f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
