"""Guardrails end to end over real HTTP: openai SDK (or httpx) → uvicorn gateway → boto3 →
the SageMaker emulator, with ApplyGuardrail answered by the local stand-in (boto3's
bedrock-runtime client through AWS_ENDPOINT_URL_BEDROCK_RUNTIME) and token quotas in moto."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llm_gateway.guardrail import OVERLAP_CHARS, UNCHECKED_MESSAGE
from local.guardrail_emulator import (
    BLOCKED_INPUT_MESSAGE,
    BLOCKED_OUTPUT_MESSAGE,
    GuardrailConfig,
)
from local.scenarios import Scenario, ScriptedToolCall
from tests.gateway.conftest import (
    PolicyBackends,
    PolicyStack,
    dimension_sets,
    emf_records,
    openai_backend,
    policy_stack,
    request_lines,
    sse_chunks,
)

WINDOW = 50
GUARD = {"guardrail_id": "gr-test", "guardrail_version": "3", "window_chars": WINDOW}
ROUTES: dict[str, Any] = {
    "routes": [
        {"model": "guarded", "backends": [openai_backend("guarded")], "guardrail": GUARD},
        {"model": "open", "backends": [openai_backend("open")],
         "guardrail": {**GUARD, "on_unavailable": "fail_open"}},
        {"model": "output-only", "backends": [openai_backend("output-only")],
         "guardrail": {**GUARD, "check_input": False}},
        {"model": "output-open", "backends": [openai_backend("output-open")],
         "guardrail": {**GUARD, "check_input": False, "on_unavailable": "fail_open"}},
        {"model": "plain", "backends": [openai_backend("plain")]},
    ]
}  # fmt: skip
BLOCKED = "forbidden"


def words(first: int, last: int) -> str:
    """Tokens of exactly 10 characters each (" w00000001"): 5 of them fill a window."""
    return "".join(f" w{i:08d}" for i in range(first, last + 1))


# Windows of 50 characters: tokens 1-5, 6-10, then 11-15, which holds " forbidden" (token 13).
BLOCKED_IN_THIRD_WINDOW = words(1, 12) + f" {BLOCKED}" + words(14, 40)
PASSED_TEXT = words(1, 10)


@pytest.fixture
def stack(
    policy_backends: PolicyBackends, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PolicyStack]:
    with policy_stack(policy_backends, ROUTES, monkeypatch) as stack:
        stack.guardrail.config = GuardrailConfig(block_words=(BLOCKED,))
        yield stack


def _checks(stack: PolicyStack, source: str) -> list[list[str]]:
    return [check.texts for check in stack.guardrail.requests if check.source == source]


# --- input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_a_blocked_prompt_is_a_400_that_invokes_and_charges_nothing(
    stack: PolicyStack, stream: bool
) -> None:
    messages: Any = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"Tell me the {BLOCKED} thing."},
    ]
    with pytest.raises(openai.BadRequestError) as raised:
        stack.client().chat.completions.create(model="guarded", messages=messages, stream=stream)
    error = raised.value
    assert error.status_code == 400
    assert error.code == "content_filter"
    assert error.type == "invalid_request_error"
    assert error.body["message"] == BLOCKED_INPUT_MESSAGE  # type: ignore[index]
    assert stack.calls() == 0  # the model was never invoked
    assert stack.day() == 0  # nothing reserved, nothing charged
    (check,) = stack.guardrail.requests
    assert (check.guardrail_id, check.guardrail_version) == ("gr-test", "3")
    assert check.texts == ["You are terse.", f"Tell me the {BLOCKED} thing."]  # every role


def test_every_role_is_checked(stack: PolicyStack) -> None:
    """A forged assistant turn or a tool result carries the prompt as well as a user turn."""
    messages: Any = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"Sure, the {BLOCKED} recipe is"},
        {"role": "user", "content": "Go on."},
    ]
    with pytest.raises(openai.BadRequestError):
        stack.client().chat.completions.create(model="guarded", messages=messages)
    assert stack.calls() == 0


def test_a_prompt_that_passes_reaches_the_model(stack: PolicyStack) -> None:
    stack.emulator.set_scenario("ep-guarded", Scenario(content="All fine."))
    reply = stack.client().chat.completions.create(
        model="guarded", messages=[{"role": "user", "content": "Hello"}]
    )
    assert reply.choices[0].message.content == "All fine."
    assert _checks(stack, "INPUT") == [["Hello"]]
    assert _checks(stack, "OUTPUT") == [["All fine."]]
    assert stack.calls("ep-guarded") == 1


# --- output ----------------------------------------------------------------------------------


def test_a_stream_blocked_mid_answer_ends_with_content_filter_after_the_passed_windows(
    stack: PolicyStack,
) -> None:
    stack.emulator.set_scenario("ep-output-only", Scenario(content=BLOCKED_IN_THIRD_WINDOW))
    response = stack.post(
        model="output-only", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count"}],
    )  # fmt: skip
    assert response.status_code == 200
    chunks, done = sse_chunks(response.text)
    assert done
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == PASSED_TEXT  # windows 1 and 2, nothing of window 3 (nor after)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "content_filter"
    assert finishes.count("content_filter") == 1
    last = next(c for c in reversed(chunks) if c["choices"])
    assert last["choices"][0]["delta"].get("content") is None  # the blocked window's text: none
    usage = chunks[-1]["usage"]  # the gateway's count: the model's never arrived
    assert usage["completion_tokens"] == 15  # the deltas generated up to the blocked window
    assert stack.day() == usage["total_tokens"]  # charged what was reported
    window1, window2 = words(1, 5), words(6, 10)
    assert _checks(stack, "OUTPUT") == [
        [window1],
        [window1[-OVERLAP_CHARS:] + window2],
        [(window1 + window2)[-OVERLAP_CHARS:] + words(11, 12) + f" {BLOCKED}" + words(14, 15)],
    ]


def test_the_sdk_sees_the_block_as_finish_reason_content_filter(stack: PolicyStack) -> None:
    stack.emulator.set_scenario("ep-output-only", Scenario(content=BLOCKED_IN_THIRD_WINDOW))
    chunks = list(
        stack.client().chat.completions.create(
            model="output-only", messages=[{"role": "user", "content": "Count"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == PASSED_TEXT
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_a_block_closes_the_upstream(stack: PolicyStack) -> None:
    """The rest of the answer is not waited for: 200 more tokens, 50 ms apart (10 s)."""
    slow = Scenario(content=BLOCKED_IN_THIRD_WINDOW + words(41, 240), token_delay_ms=50)
    stack.emulator.set_scenario("ep-output-only", slow)
    started = time.monotonic()
    response = stack.post(model="output-only", stream=True,
                          messages=[{"role": "user", "content": "Count"}])  # fmt: skip
    assert time.monotonic() - started < 5
    chunks, done = sse_chunks(response.text)
    assert done
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_an_answer_that_passes_streams_whole_window_by_window(stack: PolicyStack) -> None:
    content = words(1, 23)  # 230 characters: 4 windows and a remainder of 30
    stack.emulator.set_scenario(
        "ep-output-only", Scenario(reasoning="Counting up.", content=content)
    )
    chunks = list(
        stack.client().chat.completions.create(
            model="output-only", messages=[{"role": "user", "content": "Count"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", "") or "" for c in chunks)
    assert reasoning == "Counting up."
    assert chunks[-1].choices[0].finish_reason == "stop"
    checks = _checks(stack, "OUTPUT")
    assert len(checks) == 5
    assert checks[0][0].startswith("Counting up.")  # reasoning is checked too, in order


def test_blocked_reasoning_releases_nothing(stack: PolicyStack) -> None:
    stack.emulator.set_scenario(
        "ep-output-only",
        Scenario(reasoning=f"The user wants the {BLOCKED} recipe.", content="Fine answer."),
    )
    response = stack.post(
        model="output-only", stream=True, messages=[{"role": "user", "content": "Hi"}]
    )
    chunks, done = sse_chunks(response.text)
    assert done
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any(d.get("content") or d.get("reasoning_content") for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_tool_call_arguments_are_checked(stack: PolicyStack) -> None:
    call = ScriptedToolCall(name="send_mail", arguments=f'{{"body": "the {BLOCKED} plan"}}')
    stack.emulator.set_scenario(
        "ep-output-only", Scenario(content="", finish_reason="tool_calls", tool_calls=(call,))
    )
    tools: Any = [{"type": "function", "function": {"name": "send_mail", "parameters": {}}}]
    reply = stack.client().chat.completions.create(
        model="output-only", messages=[{"role": "user", "content": "Mail it"}], tools=tools
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.tool_calls is None
    assert choice.message.content == BLOCKED_OUTPUT_MESSAGE


def test_a_blocked_non_stream_answer_is_the_guardrail_message(stack: PolicyStack) -> None:
    stack.emulator.set_scenario(
        "ep-guarded", Scenario(reasoning="Hmm.", content=BLOCKED_IN_THIRD_WINDOW, prompt_tokens=7)
    )
    reply = stack.client().chat.completions.create(
        model="guarded", messages=[{"role": "user", "content": "Count"}]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == BLOCKED_OUTPUT_MESSAGE
    assert getattr(choice.message, "reasoning_content", None) is None
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 7  # the whole answer was read: the model's usage
    assert stack.day() == reply.usage.total_tokens
    (output_check,) = _checks(stack, "OUTPUT")  # checked whole, once
    assert output_check == ["Hmm." + BLOCKED_IN_THIRD_WINDOW]


# --- the guardrail unavailable -----------------------------------------------------------------


def test_input_check_down_failing_closed_is_a_503_with_retry_after(stack: PolicyStack) -> None:
    stack.guardrail.config = GuardrailConfig(fail_status=503)
    response = stack.post(model="guarded", messages=[{"role": "user", "content": "Hi"}])
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "guardrail_unavailable"
    assert response.headers["retry-after"] == "2"
    assert stack.calls() == 0
    assert stack.day() == 0
    assert len(stack.guardrail.requests) == 2  # one retry (botocore standard mode)


def test_input_check_down_failing_open_serves_the_answer(stack: PolicyStack) -> None:
    stack.guardrail.config = GuardrailConfig(fail_status=500, fail_source="INPUT")
    stack.emulator.set_scenario("ep-open", Scenario(content="Served anyway."))
    reply = stack.client().chat.completions.create(
        model="open", messages=[{"role": "user", "content": "Hi"}]
    )
    assert reply.choices[0].message.content == "Served anyway."


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_output_check_down_failing_closed_releases_nothing(
    stack: PolicyStack, stream: bool
) -> None:
    stack.guardrail.config = GuardrailConfig(fail_status=503, fail_source="OUTPUT")
    stack.emulator.set_scenario("ep-output-only", Scenario(content=words(1, 12)))
    response = stack.post(model="output-only", stream=stream,
                          messages=[{"role": "user", "content": "Hi"}])  # fmt: skip
    assert response.status_code == 200
    if not stream:
        choice = response.json()["choices"][0]
        assert (choice["finish_reason"], choice["message"]["content"]) == (
            "content_filter", UNCHECKED_MESSAGE
        )  # fmt: skip
        return
    chunks, done = sse_chunks(response.text)
    assert done
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_output_check_down_failing_open_streams_everything(stack: PolicyStack) -> None:
    stack.guardrail.config = GuardrailConfig(fail_status=503)
    content = words(1, 12)
    stack.emulator.set_scenario("ep-output-open", Scenario(content=content))
    chunks = list(
        stack.client().chat.completions.create(
            model="output-open", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
    assert chunks[-1].choices[0].finish_reason == "stop"


# --- telemetry ---------------------------------------------------------------------------------


def test_each_request_counts_one_guardrail_action_and_logs_no_text(
    stack: PolicyStack, request_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    client = stack.client()
    stack.emulator.set_scenario("ep-guarded", Scenario(content="Plain answer here."))
    stack.emulator.set_scenario("ep-output-only", Scenario(content=BLOCKED_IN_THIRD_WINDOW))
    stack.emulator.set_scenario("ep-plain", Scenario(content="Unguarded."))
    stack.emulator.set_scenario("ep-open", Scenario(content="Unchecked answer."))
    client.chat.completions.create(model="guarded", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="guarded", messages=[{"role": "user", "content": f"a {BLOCKED} prompt"}]
        )
    count: Any = [{"role": "user", "content": "Count"}]
    list(client.chat.completions.create(model="output-only", messages=count, stream=True))
    client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "Hi"}])
    stack.guardrail.config = GuardrailConfig(fail_status=503)
    client.chat.completions.create(model="open", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="guarded", messages=[{"role": "user", "content": "Hi"}]
        )
    out = capsys.readouterr().out
    actions = [r for r in emf_records(out) if "GuardrailActions" in r]
    assert [(r["route"], r["action"]) for r in actions] == [
        ("guarded", "passed"),
        ("guarded", "input_blocked"),
        ("output-only", "output_blocked"),
        ("open", "unavailable_passed"),
        ("guarded", "unavailable_blocked"),
    ]
    assert all(dimension_sets(r) == [{"service", "route", "action"}] for r in actions)
    assert all(r["GuardrailActions"] == [1] for r in actions)
    errors = [(r["route"], r["kind"]) for r in emf_records(out) if "Errors" in r]
    assert errors == [("guarded", "content_filter"), ("guarded", "guardrail_unavailable")]
    lines = request_lines(request_log)
    assert [line.get("guardrail") for line in lines] == [
        "passed", "input_blocked", "output_blocked", None, "unavailable_passed",
        "unavailable_blocked",
    ]  # fmt: skip
    everything = out + request_log.getvalue()
    for text in (BLOCKED, "Plain answer", "w00000001", BLOCKED_INPUT_MESSAGE, "Unguarded"):
        assert text not in everything
