"""Load: 100 concurrent streams of 200 chunks each through the gateway lose and reorder nothing."""

from __future__ import annotations

import asyncio
import json

import httpx2 as httpx

from local.scenarios import Scenario
from tests.gateway.conftest import Servers

STREAMS = 100
TOKENS = 200
# Word tokens the emulator streams one per chunk: " w000", " w001", …
CONTENT = "".join(f" w{i:03d}" for i in range(TOKENS))


async def _one(client: httpx.AsyncClient, index: int) -> list[str]:
    body = {"model": "deepseek", "stream": True,
            "messages": [{"role": "user", "content": f"stream {index}"}]}  # fmt: skip
    pieces: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            *events, buffer = buffer.split("\n\n")
            for event in events:
                payload = event.removeprefix("data: ")
                if payload == "[DONE]":
                    pieces.append("[DONE]")
                    continue
                chunk = json.loads(payload)
                assert "error" not in chunk, chunk
                pieces.extend(c["delta"]["content"] for c in chunk["choices"]
                              if c["delta"].get("content"))  # fmt: skip
    return pieces


def test_concurrent_streams_lose_and_reorder_nothing(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", Scenario(content=CONTENT))

    async def run() -> list[list[str]]:
        limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
        async with httpx.AsyncClient(
            base_url=servers_clean.gateway, limits=limits, timeout=120
        ) as client:
            return await asyncio.gather(*(_one(client, i) for i in range(STREAMS)))

    results = asyncio.run(run())
    expected = [f" w{i:03d}" for i in range(TOKENS)] + ["[DONE]"]
    assert len(results) == STREAMS
    for pieces in results:
        assert pieces == expected  # every chunk, in order, then [DONE]
    assert len(servers_clean.emulator.requests) == STREAMS
