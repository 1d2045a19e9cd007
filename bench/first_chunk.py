"""First-chunk latency of one stream at a time: the emulator called directly (boto3) vs through
the gateway (openai SDK, and a bare httpx client), interleaved, optionally with token quotas.

The same measurement as ``bench.ttfb`` with one client; ``--quotas`` adds consumers and a local
single-threaded DynamoDB (moto, in this process), so the figures then include moto's cost.

    .venv/bin/python -m bench.first_chunk [--requests 200] [--quotas] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import boto3

from bench import ttfb
from local.dynamodb import create_quota_table, dynamodb_server

QUOTA_TABLE = "bench-quota"
CONSUMERS = {
    "tiers": [{"name": "bench", "tokens_per_day": 10**12, "default_reservation": 64}],
    "consumers": {"bench": {"name": "bench", "tier": "bench"}},
}
ROWS = {
    "direct_boto3_ms": "direct boto3",
    "gateway_openai_sdk_ms": "via gateway (openai SDK)",
    "gateway_httpx_ms": "via gateway (httpx)",
    "added_openai_sdk_ms": "added by gateway + SDK",
    "added_httpx_ms": "added by gateway (httpx)",
}


def _quota_env(dynamodb_url: str) -> dict[str, str]:
    client = boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
    create_quota_table(client, QUOTA_TABLE)
    return {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
        "LLM_GATEWAY_CONSUMERS": json.dumps(CONSUMERS),
        "LLM_GATEWAY_QUOTA_TABLE": QUOTA_TABLE,
        "LLM_GATEWAY_LOCAL_CONSUMER": "bench",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--quotas",
        action="store_true",
        help="with consumers and token quotas (a local single-threaded DynamoDB)",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        extra_env = _quota_env(stack.enter_context(dynamodb_server())) if args.quotas else {}
        result = ttfb.run(requests=args.requests, concurrency=1, extra_env=extra_env)
    result["quotas"] = args.quotas
    print(
        f"first-chunk latency over {result['requests']} interleaved requests (ms), "
        f"token quotas {'on' if args.quotas else 'off'}"
    )
    print(f"{'path':28} {'median':>8} {'p90':>8} {'p99':>8}")
    for key, name in ROWS.items():
        row = result[key]
        print(f"{name:28} {row['median']:8.2f} {row['p90']:8.2f} {row['p99']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
