"""Relay throughput: how many SSE chunks per second one gateway process passes on.

One long stream with no token delay, read straight from the emulator (boto3, PayloadParts) and
through the gateway (httpx, SSE events); the direct rate bounds what the gateway can show.

    .venv/bin/python -m bench.relay [--tokens 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import boto3
import httpx2 as httpx
from botocore.config import Config

from bench.harness import ENDPOINT, servers


def _direct(emulator_url: str, body: bytes) -> tuple[int, float]:
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=emulator_url,
                          config=Config(retries={"total_max_attempts": 1}))  # fmt: skip
    start = time.perf_counter()
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=body, ContentType="application/json"
    )
    parts = sum(1 for event in response["Body"] if "PayloadPart" in event)
    return parts, time.perf_counter() - start


def _gateway(gateway_url: str) -> tuple[int, float]:
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    start = time.perf_counter()
    events = 0
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=300) as r:
        buffer = b""
        for data in r.iter_raw():
            buffer += data
            *complete, buffer = buffer.split(b"\n\n")
            events += len(complete)
    return events, time.perf_counter() - start


def run(tokens: int) -> dict[str, Any]:
    content = " t" * tokens
    with servers({"format": "openai", "content": content}) as urls:
        body = json.dumps({"messages": [{"role": "user", "content": "go"}], "stream": True})
        _direct(urls.emulator_url, body.encode())  # warm up
        _gateway(urls.gateway_url)
        parts, direct_s = _direct(urls.emulator_url, body.encode())
        events, gateway_s = _gateway(urls.gateway_url)
    return {
        "tokens": tokens,
        "emulator_parts_per_s": parts / direct_s,
        "gateway_chunks_per_s": events / gateway_s,
        "added_us_per_chunk": (gateway_s / events - direct_s / parts) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.tokens), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
