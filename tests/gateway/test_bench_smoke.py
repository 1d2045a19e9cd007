"""The benchmarks run end to end (figures are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import policies, relay, ttfb
from bench.first_chunk import main as first_chunk


def test_first_chunk_bench_produces_its_table(tmp_path: Path) -> None:
    out = tmp_path / "first_chunk.json"
    assert first_chunk(["--requests", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["requests"] == 3
    for path in ("direct_boto3_ms", "gateway_openai_sdk_ms", "gateway_httpx_ms"):
        assert result[path]["median"] > 0


def test_ttfb_and_relay_benches_measure_something() -> None:
    figures = ttfb.run(requests=2, concurrency=2)
    assert figures["requests"] == 4
    assert figures["gateway_httpx_ms"]["median"] > 0
    throughput = relay.run(200)
    assert throughput["gateway_chunks_per_s"] > 0
    assert throughput["emulator_parts_per_s"] > 0


def test_policies_bench_measures_every_path() -> None:
    figures = policies.run(requests=2, token_delay_ms=0, guardrail_latency_ms=0)
    for path in policies.PATHS:
        assert figures[f"{path}_first_ms"]["median"] > 0
