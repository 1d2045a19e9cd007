"""Time to first chunk added by the gateway, under concurrency.

The same scripted stream is fetched directly from the emulator with boto3 and through the
gateway with the openai SDK (and with a bare httpx client, to separate the SDK's own cost),
interleaved in each of ``concurrency`` worker threads; the differences are paired per round.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import httpx2 as httpx
import openai
from botocore.config import Config

from bench.harness import ENDPOINT, percentiles, servers

SCENARIO = {"format": "openai", "reasoning": "Thinking.", "content": "Hello there."}
MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]
BODY = json.dumps({"messages": MESSAGES, "stream": True}).encode()
GATEWAY_BODY = json.dumps({"model": "bench", "messages": MESSAGES, "stream": True}).encode()


def first_part(client: Any, body: bytes = BODY) -> float:
    """Seconds until the emulator's first token arrives, read directly with boto3."""
    start = time.perf_counter()
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=body, ContentType="application/json"
    )
    stream = response["Body"]
    for event in stream:
        if "PayloadPart" in event and b'"reasoning' in event["PayloadPart"]["Bytes"]:
            break
    elapsed = time.perf_counter() - start
    stream.close()
    return elapsed


def _sdk(client: openai.OpenAI) -> float:
    start = time.perf_counter()
    stream = client.chat.completions.create(model="bench", messages=MESSAGES, stream=True)
    next(iter(stream))
    elapsed = time.perf_counter() - start
    stream.close()
    return elapsed


def _raw(client: httpx.Client) -> float:
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", content=GATEWAY_BODY) as response:
        next(response.iter_raw())
        return time.perf_counter() - start


def run(
    *, requests: int, concurrency: int, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``requests`` interleaved rounds per worker, ``concurrency`` workers at once."""
    rounds: list[tuple[float, float, float]] = []
    lock = threading.Lock()
    with servers(SCENARIO, extra_env=extra_env) as urls:

        def worker() -> None:
            sm = boto3.client("sagemaker-runtime", region_name="us-east-1",
                              endpoint_url=urls.emulator_url,
                              config=Config(retries={"total_max_attempts": 1}))  # fmt: skip
            sdk = openai.OpenAI(base_url=f"{urls.gateway_url}/v1", api_key="b", max_retries=0)
            raw = httpx.Client(base_url=urls.gateway_url,
                               headers={"content-type": "application/json"})  # fmt: skip
            for _ in range(5):  # warm connections and code paths
                first_part(sm), _sdk(sdk), _raw(raw)
            mine = [(first_part(sm), _sdk(sdk), _raw(raw)) for _ in range(requests)]
            with lock:
                rounds.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    direct, sdk, raw = (list(column) for column in zip(*rounds, strict=True))
    return {
        "streams": concurrency,
        "requests": len(rounds),
        "direct_boto3_ms": percentiles(direct),
        "gateway_openai_sdk_ms": percentiles(sdk),
        "gateway_httpx_ms": percentiles(raw),
        "added_openai_sdk_ms": percentiles([s - d for d, s, _ in rounds]),
        "added_httpx_ms": percentiles([r - d for d, _, r in rounds]),
    }
