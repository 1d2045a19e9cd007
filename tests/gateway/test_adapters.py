"""Each backend format, from recorded-shape fixtures, to the same deltas; and request bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llm_gateway.adapters import Delta, InBandError, Usage, adapter_for
from llm_gateway.adapters.prompts import llama2_prompt
from llm_gateway.contract import Backend, StreamFormat
from llm_gateway.request import parse_chat_request
from llm_gateway.service import deltas

FIXTURES = Path(__file__).parent / "fixtures"


async def _parts(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run(fixture: str, fmt: StreamFormat, *, part_size: int = 7) -> list[Delta]:
    data = (FIXTURES / fixture).read_bytes()

    async def collect() -> list[Delta]:
        return [d async for d in deltas(_parts(data, part_size), adapter_for(fmt))]

    return asyncio.run(collect())


def summary(items: list[Delta]) -> tuple[str, str, list[str], Usage | None]:
    finishes = [d.finish_reason for d in items if d.finish_reason]
    usage = next((d.usage for d in items if d.usage), None)
    return (
        "".join(d.content for d in items),
        "".join(d.reasoning for d in items),
        finishes,
        usage,
    )


@pytest.mark.parametrize("fixture", ["vllm_deepseek_r1.sse", "vllm_reasoning_content.sse"])
def test_vllm_reasoning_either_field_name(fixture: str) -> None:
    content, reasoning, finishes, usage = summary(run(fixture, "openai"))
    assert reasoning == "Okay, 2+2 is 4 — simple."
    assert content == "\n\n2 + 2 = **4** ✅"
    assert finishes == ["stop"]
    assert usage == Usage(prompt_tokens=11, completion_tokens=20)


def test_lmi_chat_json_lines() -> None:
    content, reasoning, finishes, usage = summary(run("lmi_chat.jsonl", "openai"))
    assert (content, reasoning, finishes) == ("Deep learning rocks.", "", ["length"])
    assert usage == Usage(prompt_tokens=9, completion_tokens=3)


def test_lmi_native_tokens_and_details() -> None:
    content, _reasoning, finishes, usage = summary(run("lmi_native.jsonl", "lmi", part_size=3))
    assert content == "Deep Learning is fün."  # generated_text is not appended again
    assert finishes == ["stop"]  # eos_token
    assert usage == Usage(prompt_tokens=0, completion_tokens=4)  # LMI reports no prompt count


def test_tgi_tokens_skip_special_and_report_input_length() -> None:
    content, _, finishes, usage = summary(run("tgi.sse", "tgi", part_size=5))
    assert content == "Deep learning 🙂"  # no "</s>"
    assert finishes == ["stop"]
    assert usage == Usage(prompt_tokens=17, completion_tokens=4)


@pytest.mark.parametrize(
    ("fixture", "fmt"),
    [
        ("vllm_inband_error.sse", "openai"),
        ("lmi_native_error.jsonl", "lmi"),
        ("tgi_inband_error.sse", "tgi"),
    ],
)
def test_in_band_errors_raise_after_the_text_before_them(fixture: str, fmt: StreamFormat) -> None:
    seen: list[Delta] = []

    async def collect() -> None:
        data = (FIXTURES / fixture).read_bytes()
        async for delta in deltas(_parts(data, 11), adapter_for(fmt)):
            seen.append(delta)

    with pytest.raises(InBandError):
        asyncio.run(collect())
    assert "".join(d.content for d in seen) in ("Partial", "Deep ", "Deep")


def test_openai_finish_reason_error_is_an_error() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "error"}]}
    with pytest.raises(InBandError):
        list(adapter_for("openai").parse(json.dumps(chunk)))


def test_malformed_event_is_an_in_band_error() -> None:
    for fmt in ("openai", "lmi", "tgi"):
        with pytest.raises(InBandError):
            list(adapter_for(fmt).parse("{not json"))  # type: ignore[arg-type]


# --- requests -------------------------------------------------------------------------------

OPENAI = Backend(name="ds", endpoint_name="ep-ds", format="openai", max_tokens_default=4096)
LMI = Backend(
    name="llama", endpoint_name="ep-l", format="lmi", prompt_template="llama2",
    custom_attributes="accept_eula=true", max_tokens_default=1024,
)  # fmt: skip
TGI = LMI.model_copy(update={"format": "tgi"})


def _request(**fields: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return json.dumps(body).encode()


def test_openai_body_always_asks_for_usage_and_bounds_output() -> None:
    request = parse_chat_request(_request(temperature=0.2, stop="END", seed=7, user="u1"))
    body = json.loads(adapter_for("openai").request_body(request, OPENAI, 4096))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 4096  # the limit the gateway decided
    assert (body["temperature"], body["stop"], body["seed"]) == (0.2, ["END"], 7)
    assert "model" not in body
    assert "user" not in body


def test_openai_body_maps_developer_to_system_and_keeps_the_client_limit() -> None:
    request = parse_chat_request(
        _request(
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": t} for t in "AB"]},
            ],
            max_completion_tokens=50,
        )
    )  # fmt: skip
    body = json.loads(adapter_for("openai").request_body(request, OPENAI, 50))
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "AB"},
    ]
    assert body["max_tokens"] == 50


def test_lmi_body_is_a_llama2_prompt_with_lmi_parameter_names() -> None:
    request = parse_chat_request(_request(max_tokens=64, stop=["</s>", "User:"], temperature=0))
    body = json.loads(adapter_for("lmi").request_body(request, LMI, 64))
    assert body["inputs"] == "[INST] Hi [/INST]"
    assert body["stream"] is True
    params = body["parameters"]
    assert params["max_new_tokens"] == 64
    assert params["stop_sequences"] == ["</s>", "User:"]
    assert params["do_sample"] is False
    assert "temperature" not in params
    assert params["details"] is True  # the last line then carries generated_tokens


def test_tgi_body_uses_stop_and_only_positive_temperature() -> None:
    request = parse_chat_request(_request(temperature=0.7, top_p=1, stop="X"))
    params = json.loads(adapter_for("tgi").request_body(request, TGI, 10))["parameters"]
    assert params["stop"] == ["X"]
    assert params["temperature"] == 0.7
    assert params["do_sample"] is True
    assert "top_p" not in params  # TGI rejects top_p == 1


def test_llama2_prompt_multi_turn_with_system() -> None:
    request = parse_chat_request(
        _request(
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ]
        )
    )
    assert llama2_prompt(request.messages) == (
        "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]"
    )
