"""The gateway as Lambda and ``make local`` start it: ``run.sh`` → uvicorn → ``llm_gateway.main``,
its own process, with the emulator (in this process) as the SageMaker runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from local.emulator import create_emulator
from local.run import gateway_run_sh
from local.scenarios import Scenario
from local.serving import free_port, serve_in_thread
from tests.conftest import ROOT
from tests.gateway.conftest import ROUTES


@pytest.fixture
def gateway_process() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The gateway process (stdout and stderr in one pipe) and its URL."""
    emulator = create_emulator(default=Scenario())
    with serve_in_thread(emulator) as emulator_url:
        port = free_port()
        env = {
            **os.environ,
            # run.sh starts `python3`: make it this interpreter (the project's venv).
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "PORT": str(port),
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
        }
        env.pop("AWS_LWA_PORT", None)
        process = subprocess.Popen(
            ["sh", str(gateway_run_sh())], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            yield url, process
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the gateway exited:\n{process.communicate()[0]}")
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the gateway did not become ready")


def test_the_per_request_line_is_written_once(
    gateway_process: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = gateway_process
    body = {"model": "deepseek", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200
    process.terminate()
    output, _ = process.communicate(timeout=10)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [line["status"] for line in lines if line.get("message") == "request"] == [200]
