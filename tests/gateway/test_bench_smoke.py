"""The benchmarks run end to end (figures are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gateway, policies, relay, ttfb, upstream_clients
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


def test_the_isolated_gateway_bench_measures_every_figure() -> None:
    figures = gateway.run(quick=True, levels=(2,), sequential=20, relay_tokens=500)
    (level,) = figures["levels"]
    assert level["errors"] == 0
    assert level["samples"] > 0
    assert level["gateway_path_ms"]["median"] > level["direct_path_ms"]["median"] > 0
    assert figures["cpu_per_request_ms"] >= 0  # clock ticks: 0 for a few requests
    assert figures["relay"]["gateway_chunks_per_s"] > 0
    assert figures["rss_peak_bytes"] >= figures["rss_idle_bytes"] > 0


def test_the_upstream_clients_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "clients.json"
    argv = ["--clients", "threaded,native", "--sequential", "5", "--streams", "2",
            "--rounds", "1", "--relay-tokens", "200", "--json", str(out)]  # fmt: skip
    assert upstream_clients.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"threaded", "native"}
    assert all(r["relay_parts_per_s"] > 0 for r in result.values())
