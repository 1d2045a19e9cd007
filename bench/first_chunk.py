"""First-chunk latency: the emulator called directly (boto3) vs through the gateway (openai SDK).

Both servers run as their own processes on loopback, as ``make local`` runs them; requests
alternate between the two paths so drift affects both equally. Usage:

    .venv/bin/python -m bench.first_chunk [--requests 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx2 as httpx
import openai
from botocore.config import Config

from bench.ttfb import first_part as direct
from local.dynamodb import create_quota_table, dynamodb_server
from local.run import gateway_run_sh, wait_ready

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "bench-endpoint"
BACKEND = {"name": "bench", "endpoint_name": ENDPOINT, "format": "openai", "max_tokens_default": 64}
ROUTES = {"routes": [{"model": "bench", "backends": [BACKEND]}]}
SCENARIO = {ENDPOINT: {"format": "openai", "reasoning": "Thinking.", "content": "Hello there."}}
MESSAGES = [{"role": "user", "content": "Hi"}]
CONSUMERS = {
    "tiers": [{"name": "bench", "tokens_per_day": 10**12, "default_reservation": 64}],
    "consumers": {"bench": {"name": "bench", "tier": "bench"}},
}


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": pick(0.90) * 1000,
        "p99_ms": pick(0.99) * 1000,
    }


def gateway(client: openai.OpenAI) -> float:
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model="bench", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    next(iter(stream))
    elapsed = time.perf_counter() - start
    stream.close()
    return elapsed


def gateway_raw(client: httpx.Client, body: bytes) -> float:
    """The same request with a minimal HTTP client, to separate the SDK's own cost."""
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", content=body) as response:
        next(response.iter_raw())
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--emulator-port", type=int, default=18081)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--quotas",
        action="store_true",
        help="with consumers and token quotas (a local single-threaded DynamoDB)",
    )
    args = parser.parse_args(argv)

    emulator_url = f"http://127.0.0.1:{args.emulator_port}"
    gateway_url = f"http://127.0.0.1:{args.port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
        "LLM_GATEWAY_ROUTES": json.dumps(ROUTES), "PORT": str(args.port), "LOG_LEVEL": "WARNING",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        scenarios = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".json"))
        if args.quotas:
            dynamodb_url = stack.enter_context(dynamodb_server())
            create_quota_table(
                boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name="us-east-1",
                             aws_access_key_id="bench", aws_secret_access_key="bench"),
                "bench-quota",
            )  # fmt: skip
            env.update(
                {
                    "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
                    "LLM_GATEWAY_CONSUMERS": json.dumps(CONSUMERS),
                    "LLM_GATEWAY_QUOTA_TABLE": "bench-quota",
                    "LLM_GATEWAY_LOCAL_CONSUMER": "bench",
                }
            )
        json.dump(SCENARIO, scenarios)
        scenarios.flush()
        procs = [
            subprocess.Popen([sys.executable, "-m", "local.emulator", "--port",
                              str(args.emulator_port), "--scenarios", scenarios.name],
                             cwd=ROOT, env=env),
            subprocess.Popen(["sh", str(gateway_run_sh())], cwd=ROOT, env=env),
        ]  # fmt: skip
        try:
            wait_ready(f"{emulator_url}/_emulator/requests", procs[0])
            wait_ready(f"{gateway_url}/healthz", procs[1])
            os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
            sm = boto3.client(
                "sagemaker-runtime", region_name="us-east-1", endpoint_url=emulator_url,
                config=Config(retries={"total_max_attempts": 1}),
            )  # fmt: skip
            oa = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="bench", max_retries=0)
            raw = httpx.Client(base_url=gateway_url, headers={"content-type": "application/json"})
            gateway_body = json.dumps({"model": "bench", "messages": MESSAGES, "stream": True})
            for _ in range(10):  # warm up connections and code paths
                direct(sm)
                gateway(oa)
                gateway_raw(raw, gateway_body.encode())
            d, g, r = [], [], []
            for _ in range(args.requests):
                d.append(direct(sm))
                g.append(gateway(oa))
                r.append(gateway_raw(raw, gateway_body.encode()))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    diffs = [b - a for a, b in zip(d, g, strict=True)]
    result = {
        "requests": args.requests,
        "quotas": args.quotas,
        "direct_boto3": _percentiles(d),
        "via_gateway_openai_sdk": _percentiles(g),
        "via_gateway_httpx": _percentiles(r),
        "added_by_gateway": _percentiles(diffs),
        "added_by_gateway_httpx_client": _percentiles([b - a for a, b in zip(d, r, strict=True)]),
    }
    print(
        f"first-chunk latency over {args.requests} interleaved requests (ms), "
        f"token quotas {'on' if args.quotas else 'off'}"
    )
    print(f"{'path':28} {'median':>8} {'p90':>8} {'p99':>8}")
    for name in result:
        if name in ("requests", "quotas"):
            continue
        row = result[name]
        assert isinstance(row, dict)
        print(f"{name:28} {row['median_ms']:8.2f} {row['p90_ms']:8.2f} {row['p99_ms']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
