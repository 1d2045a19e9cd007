"""The guardrail's pure parts: verdicts, what is checked, and the output windows (a fake
ApplyGuardrail; the real protocol is test_guardrail_e2e.py's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from llm_gateway.adapters import Delta, Usage
from llm_gateway.contract import GuardrailAction, GuardrailRef
from llm_gateway.guardrail import (
    DEFAULT_BLOCKED_MESSAGE,
    OVERLAP_CHARS,
    UNCHECKED_MESSAGE,
    GuardrailClient,
    GuardrailUnavailableError,
    OutputGuard,
    Source,
    Verdict,
    checked_text,
    prompt_texts,
    verdict_from,
)
from llm_gateway.request import parse_chat_request
from llm_gateway.telemetry import RequestTelemetry

REF = GuardrailRef(guardrail_id="g", guardrail_version="1", window_chars=50)


class FakeGuardrail(GuardrailClient):
    """Blocks texts containing ``word``; raises when ``down``; records what it was asked."""

    def __init__(self, word: str = "forbidden", *, down: bool = False) -> None:
        super().__init__(client=None)
        self.word = word
        self.down = down
        self.checked: list[str] = []

    async def check(self, ref: GuardrailRef, source: Source, texts: Sequence[str]) -> Verdict:
        (text,) = texts
        self.checked.append(text)
        if self.down:
            raise GuardrailUnavailableError("down")
        return Verdict(self.word in text, "Blocked." if self.word in text else "")


async def _feed(deltas: Sequence[Delta]) -> AsyncIterator[Delta]:
    for delta in deltas:
        yield delta


def _run(guard: OutputGuard, deltas: Sequence[Delta]) -> list[Delta]:
    async def collect() -> list[Delta]:
        return [delta async for delta in guard.run(_feed(deltas))]

    return asyncio.run(collect())


def _guard(
    client: FakeGuardrail, ref: GuardrailRef = REF, *, window: int | None = 50
) -> tuple[OutputGuard, RequestTelemetry]:
    telemetry = RequestTelemetry(request_id="r")
    guard = OutputGuard(client, ref, telemetry.note_guardrail, window_chars=window,
                        prompt_tokens=30)  # fmt: skip
    return guard, telemetry


def _tokens(text: str, size: int = 10) -> list[Delta]:
    return [Delta(content=text[i : i + size]) for i in range(0, len(text), size)]


def test_verdicts_from_the_response_shapes() -> None:
    assert verdict_from({"action": "NONE", "outputs": []}) == Verdict(False)
    intervened = {"action": "GUARDRAIL_INTERVENED", "actionReason": "r",
                  "outputs": [{"text": "No."}, {"text": "ignored"}]}  # fmt: skip
    assert verdict_from(intervened) == Verdict(True, "No.")
    assert verdict_from({"action": "GUARDRAIL_INTERVENED", "outputs": []}) == Verdict(
        True, DEFAULT_BLOCKED_MESSAGE
    )


def test_the_prompt_is_every_message_with_text() -> None:
    chat = parse_chat_request(
        b'{"model": "m", "messages": ['
        b'{"role": "system", "content": "Be kind."},'
        b'{"role": "user", "content": [{"type": "text", "text": "a"},'
        b' {"type": "text", "text": "b"}]},'
        b'{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",'
        b' "function": {"name": "f", "arguments": "{}"}}]},'
        b'{"role": "tool", "tool_call_id": "c", "content": "result"}]}'
    )
    assert prompt_texts(chat) == ["Be kind.", "ab", "result"]


def test_checked_text_is_reasoning_content_and_tool_arguments() -> None:
    delta = Delta(
        content="c",
        reasoning="r",
        tool_calls=({"index": 0, "function": {"name": "f", "arguments": '{"a"'}},
                    {"index": 1, "id": "x"}),
    )  # fmt: skip
    assert checked_text(delta) == 'rc{"a"'


def test_text_is_released_window_by_window_then_the_remainder() -> None:
    client = FakeGuardrail()
    guard, telemetry = _guard(client)
    text = "".join(f"{i:02d}-------|" for i in range(12))  # 120 characters
    deltas = [*_tokens(text), Delta(finish_reason="stop"), Delta(usage=Usage(3, 12))]
    assert _run(guard, deltas) == deltas
    assert [len(t) for t in client.checked] == [50, 50 + 50, OVERLAP_CHARS + 20]
    assert client.checked[1] == text[:100]  # the first window as context, then the second
    assert client.checked[2] == text[100 - OVERLAP_CHARS :]
    assert telemetry.guardrail == GuardrailAction.PASSED
    assert not guard.unchecked


def test_a_blocked_window_is_never_released() -> None:
    client = FakeGuardrail()
    guard, telemetry = _guard(client)
    text = "a" * 50 + "forbidden!" + "b" * 40 + "c" * 30
    out = _run(guard, [*_tokens(text), Delta(finish_reason="stop")])
    assert "".join(d.content for d in out) == "a" * 50
    assert out[-2:] == [Delta(finish_reason="content_filter"), Delta(usage=Usage(30, 10))]
    assert len(client.checked) == 2  # nothing after the blocked window was read
    assert telemetry.guardrail == GuardrailAction.OUTPUT_BLOCKED


def test_a_block_in_the_remainder_keeps_the_model_usage() -> None:
    guard, _ = _guard(FakeGuardrail())
    deltas = [Delta(content="the forbidden end"), Delta(finish_reason="stop"),
              Delta(usage=Usage(8, 4))]  # fmt: skip
    assert _run(guard, deltas) == [Delta(finish_reason="content_filter"), Delta(usage=Usage(8, 4))]


def test_a_non_stream_answer_is_checked_once_and_answered_with_the_message() -> None:
    client = FakeGuardrail()
    guard, _ = _guard(client, window=None)
    deltas = [*_tokens("x" * 300 + " forbidden"), Delta(finish_reason="stop"),
              Delta(usage=Usage(5, 31))]  # fmt: skip
    out = _run(guard, deltas)
    assert out == [Delta(content="Blocked.", finish_reason="content_filter"),
                   Delta(usage=Usage(5, 31))]  # fmt: skip
    assert len(client.checked) == 1


@pytest.mark.parametrize("window", [50, None], ids=["stream", "non-stream"])
def test_an_unavailable_guardrail_failing_closed_releases_nothing(window: int | None) -> None:
    guard, telemetry = _guard(FakeGuardrail(down=True), window=window)
    out = _run(guard, [*_tokens("z" * 120), Delta(finish_reason="stop")])
    assert [d.content for d in out if d.content] == ([] if window else [UNCHECKED_MESSAGE])
    assert out[-2].finish_reason == "content_filter"
    assert telemetry.guardrail == GuardrailAction.UNAVAILABLE_BLOCKED


def test_an_unavailable_guardrail_failing_open_releases_everything_marked_unchecked() -> None:
    ref = REF.model_copy(update={"on_unavailable": "fail_open"})
    guard, telemetry = _guard(FakeGuardrail(down=True), ref)
    deltas = [*_tokens("z" * 120), Delta(finish_reason="stop")]
    assert _run(guard, deltas) == deltas
    assert guard.unchecked
    assert telemetry.guardrail == GuardrailAction.UNAVAILABLE_PASSED


def test_the_most_telling_action_is_kept() -> None:
    telemetry = RequestTelemetry(request_id="r")
    for action in (GuardrailAction.PASSED, GuardrailAction.OUTPUT_BLOCKED,
                   GuardrailAction.UNAVAILABLE_PASSED, GuardrailAction.PASSED):  # fmt: skip
        telemetry.note_guardrail(action)
    assert telemetry.guardrail == GuardrailAction.OUTPUT_BLOCKED


def test_the_client_classifies_every_failure_as_unavailable() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    class Failing:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def apply_guardrail(self, **_: Any) -> dict[str, Any]:
            raise self.exc

    for exc in (
        ClientError({"Error": {"Code": "AccessDeniedException", "Message": "m"}}, "Apply"),
        EndpointConnectionError(endpoint_url="http://x"),
    ):
        with pytest.raises(GuardrailUnavailableError):
            GuardrailClient(Failing(exc)).apply(REF, "INPUT", ["text"])
