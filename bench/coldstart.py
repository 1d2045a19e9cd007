"""Cold start: the runtime's import time and the size of the bundled Lambda asset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.harness import ROOT, ROUTES
from llm_serving.bundling import GatewayLocalBundler

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")


def import_time_ms(runs: int = 5) -> float:
    """Median cumulative ``python -X importtime`` of ``llm_gateway.main`` (app built too)."""
    env = {
        **os.environ,
        "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    samples = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import llm_gateway.main"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        total = [
            int(m[2]) for m in _IMPORT_LINE.finditer(result.stderr) if m[3] == "llm_gateway.main"
        ]
        samples.append(total[-1] / 1000)
    return sorted(samples)[len(samples) // 2]


def bundle_size(architecture: str = "arm64") -> dict[str, int]:
    """Bytes of the bundled asset, unzipped and zipped (as ``cdk deploy`` uploads it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "asset"
        out.mkdir()
        GatewayLocalBundler(architecture=architecture).bundle(out)  # type: ignore[arg-type]
        files = [p for p in out.rglob("*") if p.is_file()]
        archive = Path(tmp) / "asset.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.relative_to(out))
        return {"unzipped_bytes": sum(p.stat().st_size for p in files),
                "zipped_bytes": archive.stat().st_size}  # fmt: skip


def run() -> dict[str, Any]:
    return {"import_ms": import_time_ms(), **bundle_size()}
