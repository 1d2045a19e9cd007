"""The servers a benchmark talks to: the emulator and the gateway, each its own process on
loopback (the gateway started through ``run.sh``, as the Lambda Web Adapter starts it)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.run import gateway_run_sh, wait_ready
from local.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "bench-endpoint"
BACKEND = {"name": "bench", "endpoint_name": ENDPOINT, "format": "openai", "max_tokens_default": 64}
ROUTES = {"routes": [{"model": "bench", "backends": [BACKEND]}]}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


@dataclass(frozen=True)
class Servers:
    emulator_url: str
    gateway_url: str
    gateway_pid: int


def percentiles(samples: list[float], scale: float = 1000.0) -> dict[str, float]:
    """Median, p90 and p99 of ``samples`` (seconds), in milliseconds by default."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * scale

    return {"median": statistics.median(ordered) * scale, "p90": pick(0.9), "p99": pick(0.99)}


@contextmanager
def servers(
    scenario: Mapping[str, Any], *, extra_env: Mapping[str, str] | None = None
) -> Iterator[Servers]:
    """Emulator (answering ``scenario`` on the bench endpoint) and gateway, until exit."""
    emulator_port, gateway_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    env = {
        **os.environ, **CREDENTIALS,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
        "LLM_GATEWAY_ROUTES": json.dumps(ROUTES), "PORT": str(gateway_port),
        "LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json") as scenarios:
        json.dump({ENDPOINT: dict(scenario)}, scenarios)
        scenarios.flush()
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs = [
            subprocess.Popen([sys.executable, "-m", "local.emulator", "--port",
                              str(emulator_port), "--scenarios", scenarios.name],
                             cwd=ROOT, env=env, **quiet),  # type: ignore[call-overload]
            subprocess.Popen(["sh", str(gateway_run_sh())], cwd=ROOT, env=env, **quiet),  # type: ignore[call-overload]
        ]  # fmt: skip
        try:
            wait_ready(f"{emulator_url}/_emulator/requests", procs[0])
            wait_ready(f"{gateway_url}/healthz", procs[1])
            os.environ.update(CREDENTIALS)
            yield Servers(emulator_url, gateway_url, procs[1].pid)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
