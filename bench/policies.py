"""What a route's response cache and output guardrail add to the first chunk (and the whole
stream), against the same route without them, through the gateway started by ``run.sh``.

Routes on one gateway, one emulated backend: ``plain`` (neither), ``cached`` (``when:
always``: every request is cacheable), ``guarded`` (output check only, ``window_chars`` 400)
and ``guarded-50`` (window 50). The cache is a table in moto's DynamoDB (in this process,
single-threaded); ApplyGuardrail is the local stand-in (``local.guardrail_emulator``, answering
in well under a millisecond unless ``--guardrail-latency-ms``). Each round sends, one at a time:
a new prompt to ``plain``, the same new prompt to ``cached`` (a miss, stored) and again (a hit),
then one to each guarded route. Times are to the first SSE event carrying text and to the end.

    .venv/bin/python -m bench.policies [--requests 100] [--token-delay-ms 0]
        [--guardrail-latency-ms 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx2 as httpx

from bench.harness import CREDENTIALS, percentiles
from local.dynamodb import create_cache_table, dynamodb_server
from local.run import local_servers
from local.serving import free_port

ENDPOINT = "bench-endpoint"
BACKEND = {"name": "bench", "endpoint_name": ENDPOINT, "format": "openai",
           "max_tokens_default": 1024}  # fmt: skip
GUARDRAIL = {"guardrail_id": "bench", "guardrail_version": "1", "check_input": False}
ROUTES = {
    "routes": [
        {"model": "plain", "backends": [BACKEND]},
        {"model": "cached", "backends": [BACKEND], "cache": {"when": "always"}},
        {"model": "guarded", "backends": [BACKEND], "guardrail": GUARDRAIL},
        {"model": "guarded-50", "backends": [BACKEND],
         "guardrail": {**GUARDRAIL, "window_chars": 50}},
    ]
}  # fmt: skip
CACHE_TABLE = "bench-cache"
# 600 characters of answer in 5-character tokens: the 400-character window closes at token 80.
CONTENT = "word " * 120
PATHS = ("plain", "cache_miss", "cache_hit", "guarded_400", "guarded_50")


def _timed(client: httpx.Client, model: str, prompt: str) -> tuple[float, float, str]:
    """Seconds to the first text event and to the end of the stream, and the cache header."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    start = time.perf_counter()
    first: float | None = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line:
                first = time.perf_counter() - start
        end = time.perf_counter() - start
        cache = response.headers.get("x-llm-cache", "")
    if first is None:
        raise RuntimeError(f"{model}: no text arrived")
    return first, end, cache


def run(*, requests: int, token_delay_ms: float, guardrail_latency_ms: float) -> dict[str, Any]:
    scenario = {"format": "openai", "content": CONTENT, "token_delay_ms": token_delay_ms}
    samples: dict[str, list[tuple[float, float]]] = {path: [] for path in PATHS}
    with dynamodb_server() as dynamodb_url:
        create_cache_table(
            boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name="us-east-1",
                         aws_access_key_id="bench", aws_secret_access_key="bench"),
            CACHE_TABLE,
        )  # fmt: skip
        env = {
            **CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "LOG_LEVEL": "WARNING",
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url, "LLM_GATEWAY_CACHE_TABLE": CACHE_TABLE,
            "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
        }  # fmt: skip
        with local_servers(
            scenarios={ENDPOINT: scenario}, env=env, emulator_port=free_port(),
            gateway_port=free_port(), guardrail_port=free_port(), quiet=True,
            guardrail_latency_ms=guardrail_latency_ms,
        ) as running:  # fmt: skip
            os.environ.update(CREDENTIALS)
            with httpx.Client(base_url=running.gateway_url, timeout=60) as client:
                for warm in range(5):  # warm connections and code paths
                    for model in ("plain", "cached", "cached", "guarded", "guarded-50"):
                        _timed(client, model, f"warm-up {warm}")
                for number in range(requests):
                    prompt = f"Question {number}?"
                    plain = _timed(client, "plain", prompt)
                    miss = _timed(client, "cached", prompt)
                    hit = _timed(client, "cached", prompt)
                    if (miss[2], hit[2]) != ("miss", "hit"):
                        raise RuntimeError(f"expected a miss then a hit, got {miss[2]}, {hit[2]}")
                    guarded = _timed(client, "guarded", prompt)
                    guarded_50 = _timed(client, "guarded-50", prompt)
                    for path, sample in zip(
                        PATHS, (plain, miss, hit, guarded, guarded_50), strict=True
                    ):
                        samples[path].append(sample[:2])
    result: dict[str, Any] = {
        "requests": requests,
        "token_delay_ms": token_delay_ms,
        "guardrail_latency_ms": guardrail_latency_ms,
    }
    for path, pairs in samples.items():
        result[f"{path}_first_ms"] = percentiles([first for first, _ in pairs])
        result[f"{path}_end_ms"] = percentiles([end for _, end in pairs])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--token-delay-ms", type=float, default=0)
    parser.add_argument("--guardrail-latency-ms", type=float, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(requests=args.requests, token_delay_ms=args.token_delay_ms,
                 guardrail_latency_ms=args.guardrail_latency_ms)  # fmt: skip
    print(
        f"{result['requests']} rounds, {len(CONTENT)} characters of answer, token delay "
        f"{args.token_delay_ms:g} ms, guardrail latency {args.guardrail_latency_ms:g} ms (ms)"
    )
    print(f"{'path':14} {'first med':>10} {'first p90':>10} {'end med':>10} {'end p90':>10}")
    for path in PATHS:
        first, end = result[f"{path}_first_ms"], result[f"{path}_end_ms"]
        print(f"{path:14} {first['median']:10.2f} {first['p90']:10.2f} "
              f"{end['median']:10.2f} {end['p90']:10.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
