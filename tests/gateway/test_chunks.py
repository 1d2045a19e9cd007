"""ChunkWriter's events are byte for byte the JSON of the whole chunk object (it encodes the
part shared by a response's chunks once)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_gateway.adapters import Delta
from llm_gateway.chunks import ChunkWriter


def _whole(writer: ChunkWriter, body: dict[str, Any], delta: Delta) -> bytes:
    obj = {
        "id": writer.id,
        "object": "chat.completion.chunk",
        "created": writer.created,
        "model": writer.model,
        "choices": [
            {
                "index": 0,
                "delta": body,
                "logprobs": delta.logprobs,
                "finish_reason": delta.finish_reason,
            }
        ],
    }
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DELTAS = [
    Delta(content="Hello"),
    Delta(reasoning='Let me think: "quotes", \\ and\nnewlines'),
    Delta(content="日本語 ☃ \u2028 emoji 🦙"),
    Delta(tool_calls=({"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}},)),
    Delta(content="x", logprobs={"content": [{"token": "x", "logprob": -0.1, "bytes": [120]}]}),
    Delta(finish_reason="stop"),
    Delta(content="", finish_reason="length"),
]


@pytest.mark.parametrize("model", ["deepseek", 'odd "name" é'])
def test_each_event_is_the_json_of_the_whole_chunk(model: str) -> None:
    writer = ChunkWriter(model)
    for number, delta in enumerate(DELTAS):
        body: dict[str, Any] = {"role": "assistant"} if number == 0 else {}
        if delta.reasoning:
            body["reasoning_content"] = delta.reasoning
        if delta.content:
            body["content"] = delta.content
        if delta.tool_calls:
            body["tool_calls"] = list(delta.tool_calls)
        event = writer.delta(delta)
        assert event == _whole(writer, body, delta)
        assert json.loads(event[len(b"data: ") :])["choices"][0]["delta"] == body
