"""The servers a benchmark talks to: the emulator and the gateway, each its own process on
loopback (the gateway started through ``run.sh``, as the Lambda Web Adapter starts it)."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.run import local_servers
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
    env = {
        **CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
        "LOG_LEVEL": "WARNING", **(extra_env or {}),
    }  # fmt: skip
    with local_servers(
        scenarios={ENDPOINT: dict(scenario)},
        env=env,
        emulator_port=free_port(),
        gateway_port=free_port(),
        quiet=True,
    ) as running:
        os.environ.update(CREDENTIALS)
        yield Servers(running.emulator_url, running.gateway_url, running.gateway.pid)
