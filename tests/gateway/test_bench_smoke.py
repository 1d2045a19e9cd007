"""The first-chunk benchmark runs end to end (figures are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.first_chunk import main
from local.serving import free_port


def test_first_chunk_bench_produces_its_table(tmp_path: Path) -> None:
    out = tmp_path / "first_chunk.json"
    args = ["--requests", "3", "--port", str(free_port()), "--emulator-port", str(free_port())]
    assert main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["requests"] == 3
    for path in ("direct_boto3", "via_gateway_openai_sdk", "via_gateway_httpx"):
        assert result[path]["median_ms"] > 0
