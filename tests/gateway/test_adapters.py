"""Each backend format, from recorded-shape fixtures, to the same deltas; and request bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llm_gateway.adapters import Delta, InBandError, Usage, adapter_for
from llm_gateway.adapters.prompts import llama2_prompt
from llm_gateway.chunks import merge_tool_calls
from llm_gateway.contract import Backend, ImageInput, StreamFormat
from llm_gateway.request import parse_chat_request
from llm_gateway.service import delta_batches

FIXTURES = Path(__file__).parent / "fixtures"


async def _parts(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run(fixture: str, fmt: StreamFormat, *, part_size: int = 7) -> list[Delta]:
    data = (FIXTURES / fixture).read_bytes()

    async def collect() -> list[Delta]:
        batches = delta_batches(_parts(data, part_size), adapter_for(fmt))
        return [d async for batch in batches for d in batch]

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
@pytest.mark.parametrize("part_size", [11, 1 << 20], ids=["small parts", "one part"])
def test_in_band_errors_raise_after_the_text_before_them(
    fixture: str, fmt: StreamFormat, part_size: int
) -> None:
    seen: list[Delta] = []

    async def collect() -> None:
        data = (FIXTURES / fixture).read_bytes()
        async for batch in delta_batches(_parts(data, part_size), adapter_for(fmt)):
            seen.extend(batch)

    with pytest.raises(InBandError):
        asyncio.run(collect())
    assert "".join(d.content for d in seen) in ("Partial", "Deep ", "Deep")


def test_deltas_that_arrive_together_are_one_batch() -> None:
    """One batch per upstream part that completes events: what the relay writes at once."""
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % word
        for word in (b"a", b"b", b"c")
    ]

    async def parts() -> AsyncIterator[bytes]:
        yield events[0] + events[1]  # two events together
        yield events[2][:10]  # half an event: no batch yet
        yield events[2][10:]

    async def collect() -> list[list[str]]:
        return [[d.content for d in batch]
                async for batch in delta_batches(parts(), adapter_for("openai"))]  # fmt: skip

    assert asyncio.run(collect()) == [["a", "b"], ["c"]]


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
NATIVE = {"lmi": LMI, "tgi": TGI}


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


# --- pass-through: tools, structured output, logprobs, usage details -------------------------

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
SCHEMA = {"name": "out", "schema": {"type": "object", "properties": {}}, "strict": True}


def test_openai_body_forwards_tools_formats_and_tool_turns_unchanged() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "tool_calls": [CALL]},  # content absent: stays absent
    ]
    fields = {
        "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False, "reasoning_effort": "minimal", "logprobs": True,
        "top_logprobs": 3, "response_format": {"type": "json_schema", "json_schema": SCHEMA},
    }  # fmt: skip
    request = parse_chat_request(_request(messages=messages, **fields))
    body = json.loads(adapter_for("openai").request_body(request, OPENAI, 100))
    assert body["messages"] == messages
    for name, value in fields.items():
        assert body[name] == value, name


def test_openai_body_leaves_unset_parameters_out() -> None:
    body = json.loads(adapter_for("openai").request_body(parse_chat_request(_request()), OPENAI, 9))
    for name in ("tools", "tool_choice", "parallel_tool_calls", "response_format",
                 "reasoning_effort", "logprobs", "top_logprobs"):  # fmt: skip
        assert name not in body


def _chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]})


def test_openai_tool_call_deltas_finish_and_usage_details() -> None:
    adapter = adapter_for("openai")
    head = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    piece = {"index": 0, "function": {"arguments": '{"a'}}
    (first,) = adapter.parse(_chunk({"tool_calls": [head]}))
    (last,) = adapter.parse(_chunk({"tool_calls": [piece]}, "tool_calls"))
    assert (first.tool_calls, first.generated) == ((head,), True)
    assert (last.tool_calls, last.finish_reason) == ((piece,), "tool_calls")
    usage_chunk = {"choices": [], "usage": {
        "prompt_tokens": 10, "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 2}}}  # fmt: skip
    (usage,) = adapter.parse(json.dumps(usage_chunk))
    assert usage.usage == Usage(10, 4, cached_tokens=8, reasoning_tokens=2)
    nulls = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                      "prompt_tokens_details": None}}  # fmt: skip
    assert next(iter(adapter.parse(json.dumps(nulls)))).usage == Usage(1, 1)


def test_openai_logprobs_are_kept_and_unknown_finishes_are_stop() -> None:
    logprobs = {"content": [{"token": "x", "logprob": -0.5, "bytes": [120], "top_logprobs": []}]}
    (delta,) = adapter_for("openai").parse(_chunk({"content": "x"}, "abort", logprobs=logprobs))
    assert (delta.logprobs, delta.finish_reason) == (logprobs, "stop")


def test_merge_tool_calls_concatenates_arguments_per_index() -> None:
    pieces = [
        {"index": 1, "id": "b", "type": "function", "function": {"name": "g"}},
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"x":'}},
        {"index": 1, "function": {"arguments": "{}"}},
        {"index": 0, "function": {"arguments": " 1}"}},
    ]
    assert merge_tool_calls(pieces) == [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]


NATIVE_REFUSED = [
    ({"tools": [TOOL]}, "tools", "without tools"),
    ({"tools": [TOOL], "tool_choice": "required"}, "tools", "without tools"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls", "without tools"),
    ({"response_format": {"type": "json_object"}}, "response_format", "output format"),
    ({"reasoning_effort": "low"}, "reasoning_effort", "reasoning"),
    ({"logprobs": True, "top_logprobs": 1}, "logprobs", "log probabilities"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [CALL]}]},
     "messages[1].tool_calls", "without tools"),
    ({"messages": [{"role": "user", "content": "Hi"},
                   {"role": "tool", "tool_call_id": "c1", "content": "1"}]},
     "messages[1].role", "without tools"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
     "messages[0].content[0].type", "without images"),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["lmi", "tgi"])
@pytest.mark.parametrize(("fields", "param", "why"), NATIVE_REFUSED)
def test_native_formats_refuse_what_needs_an_openai_backend(
    fmt: StreamFormat, fields: dict[str, object], param: str, why: str
) -> None:
    error = adapter_for(fmt).unsupported(parse_chat_request(_request(**fields)), NATIVE[fmt])
    assert error is not None
    assert (error.status, error.param) == (400, param)
    assert error.code in ("unsupported_parameter", "unsupported_value")
    assert f"'{param}'" in error.message
    assert "model 'm': its backend takes a plain prompt" in error.message
    assert why in error.message
    vision = OPENAI.model_copy(update={"image_input": ImageInput()})
    assert adapter_for("openai").unsupported(parse_chat_request(_request(**fields)), vision) is None


@pytest.mark.parametrize("fmt", ["lmi", "tgi"])
def test_native_formats_accept_values_that_ask_for_nothing(fmt: StreamFormat) -> None:
    request = parse_chat_request(
        _request(tool_choice="none", response_format={"type": "text"}, logprobs=False, seed=1)
    )
    assert adapter_for(fmt).unsupported(request, NATIVE[fmt]) is None
