"""Content safety with Amazon Bedrock guardrails (``ApplyGuardrail``), per route.

The edge (:class:`GuardrailClient`) is botocore's ``bedrock-runtime`` client. The request and
response shapes are the service model's (botocore ``data/bedrock-runtime/2023-09-30/
service-2.json``, operation ``ApplyGuardrail``: ``POST /guardrail/{guardrailIdentifier}/version/
{guardrailVersion}/apply``, rest-json)::

    request:  source: "INPUT" | "OUTPUT", content: [{"text": {"text": str}}, ...]
    response: action: "NONE" | "GUARDRAIL_INTERVENED", actionReason?: str,
              outputs: [{"text": str}, ...]   (intervened: the guardrail's configured message)
    errors:   AccessDenied (403), ResourceNotFound (404), Throttling (429), Validation (400),
              ServiceQuotaExceeded (400), InternalServer (500), ServiceUnavailable (503)

Every error (and every network failure) is "unavailable": the route's ``on_unavailable``
decides. What the gateway does with a verdict:

* Input (:func:`check_input`): the text of every message, whatever its role, one content block
  per message. Every message is the client's to write (a "system" or "assistant" turn can be
  forged as easily as a "user" one, and a tool result carries whatever the tool fetched), so
  none is exempt. Image parts are not sent (text only). Checked before anything is reserved or
  invoked: a block is a 400 ``content_filter`` and costs no tokens.
* Output (:class:`OutputGuard`): generated text is held back and released only after it passed,
  ``window_chars`` of new text at a time, then the remainder at the end. The checked text is the
  content, the reasoning (clients show ``reasoning_content``: it is as visible as the answer) and
  the tool calls' ``arguments`` (the client acts on them: a tool may send them on), in the order
  generated. Each check also carries the last :data:`OVERLAP_CHARS` characters of the text
  checked before it, so a phrase cut by a window boundary is still seen whole.
* A guardrail that intervenes by masking (``ANONYMIZE`` sensitive-information actions) reports
  ``GUARDRAIL_INTERVENED`` too: the gateway blocks rather than rewriting; configure BLOCK
  actions for routes behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from llm_gateway import aws_clients
from llm_gateway.adapters import Delta, Usage
from llm_gateway.contract import GuardrailAction, GuardrailRef
from llm_gateway.errors import GatewayError

if TYPE_CHECKING:
    from botocore.session import Session

    from llm_gateway.request import ChatRequest

logger = logging.getLogger(__name__)

Source = Literal["INPUT", "OUTPUT"]
Note = Callable[[GuardrailAction], None]

OVERLAP_CHARS = 64
"""Characters of already-checked answer repeated at the start of the next output check."""
DEFAULT_BLOCKED_MESSAGE = "The content was blocked by the content filter."
UNCHECKED_MESSAGE = "The answer was withheld: the content filter could not check it."


class GuardrailUnavailableError(Exception):
    """ApplyGuardrail failed (an error response, a timeout, no connection)."""


@dataclass(frozen=True)
class Verdict:
    intervened: bool
    message: str = ""
    """The guardrail's output message (its configured blocked messaging) when it intervened."""


def content_filtered(message: str) -> GatewayError:
    """The 400 for a prompt the guardrail blocked (the guardrail's own message)."""
    return GatewayError(400, message or DEFAULT_BLOCKED_MESSAGE, code="content_filter")


def guardrail_unavailable() -> GatewayError:
    return GatewayError(
        503, "The content filter is unavailable right now; retry shortly.", type="server_error",
        code="guardrail_unavailable", headers={"retry-after": "2"},
    )  # fmt: skip


def verdict_from(response: dict[str, Any]) -> Verdict:
    """An ``ApplyGuardrailResponse`` as a verdict (the first output's text is the message)."""
    if response.get("action") != "GUARDRAIL_INTERVENED":
        return Verdict(False)
    outputs = response.get("outputs") or []
    texts = [o["text"] for o in outputs if isinstance(o, dict) and isinstance(o.get("text"), str)]
    logger.debug("guardrail intervened: %s", response.get("actionReason"))
    return Verdict(True, texts[0] if texts else DEFAULT_BLOCKED_MESSAGE)


class GuardrailClient:
    """ApplyGuardrail through one shared, thread-safe botocore client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_env(cls, *, session: Session | None = None) -> GuardrailClient:
        """botocore's ``bedrock-runtime`` client, configured by the process environment (region,
        credentials; ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` for local runs: botocore's
        ``ConfiguredEndpointProvider`` reads ``AWS_ENDPOINT_URL_<SERVICE_ID>``,
        botocore/configprovider.py).

        A check stalls the request (input) or the stream (output), so it fails fast: 1 s to
        connect, 2 s to read, and one retry in botocore's standard mode (throttling and
        transient 5xx/connection errors, jittered backoff of up to 50 ms, or up to 1 s after
        throttling: botocore/retries/standard.py, ExponentialBackoff). Worst case ≈ 7 s before
        ``on_unavailable`` applies; more retries would only lengthen an outage's stalls.
        """
        config = Config(
            connect_timeout=1,
            read_timeout=2,
            retries={"mode": "standard", "total_max_attempts": 2},
            max_pool_connections=64,
        )
        return cls(aws_clients.client("bedrock-runtime", config, session))

    def apply(self, ref: GuardrailRef, source: Source, texts: Sequence[str]) -> Verdict:
        """One ApplyGuardrail call (blocking); raises :class:`GuardrailUnavailableError`."""
        try:
            response: dict[str, Any] = self._client.apply_guardrail(
                guardrailIdentifier=ref.guardrail_id,
                guardrailVersion=ref.guardrail_version,
                source=source,
                content=[{"text": {"text": text}} for text in texts],
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise GuardrailUnavailableError(f"ApplyGuardrail: {code}") from exc
        except BotoCoreError as exc:
            raise GuardrailUnavailableError(f"ApplyGuardrail: {type(exc).__name__}") from exc
        return verdict_from(response)

    async def check(self, ref: GuardrailRef, source: Source, texts: Sequence[str]) -> Verdict:
        """:meth:`apply` off the event loop."""
        return await asyncio.to_thread(self.apply, ref, source, texts)


def prompt_texts(chat: ChatRequest) -> list[str]:
    """What the input check reads: each message's text (every role), empty ones left out."""
    return [message.text for message in chat.messages if message.text]


async def check_input(
    client: GuardrailClient, ref: GuardrailRef, chat: ChatRequest, note: Note
) -> None:
    """Raise the client's error if the guardrail blocks the prompt (or is down, failing
    closed); return when it may go on to the model."""
    texts = prompt_texts(chat)
    if not texts:
        note(GuardrailAction.PASSED)
        return
    try:
        verdict = await client.check(ref, "INPUT", texts)
    except GuardrailUnavailableError as exc:
        logger.warning("input guardrail unavailable (%s): %s", ref.on_unavailable, exc)
        if ref.on_unavailable == "fail_open":
            note(GuardrailAction.UNAVAILABLE_PASSED)
            return
        note(GuardrailAction.UNAVAILABLE_BLOCKED)
        raise guardrail_unavailable() from None
    if verdict.intervened:
        note(GuardrailAction.INPUT_BLOCKED)
        raise content_filtered(verdict.message)
    note(GuardrailAction.PASSED)


def checked_text(delta: Delta) -> str:
    """The part of a delta the output check reads: reasoning, content, tool-call arguments."""
    arguments = "".join(
        str(call.get("function", {}).get("arguments") or "")
        for call in delta.tool_calls
        if isinstance(call.get("function"), dict)
    )
    return delta.reasoning + delta.content + arguments


class OutputGuard:
    """Holds generated deltas back until the text they carry passed the guardrail.

    ``window_chars`` None checks everything once, at the end (a non-streamed answer); a block
    then answers with the guardrail's message as the content. Streamed, a block ends the stream
    with ``finish_reason: content_filter`` and none of the blocked window's text. Either way
    the deltas after it are never read (the caller closes the upstream), and the usage is the
    backend's if it had arrived, else the gateway's count: the prompt estimate and one token
    per generated delta (``admission.token_counts`` counts a cut-short stream the same way).

    Checks run one at a time, in order; the upstream keeps being read meanwhile, so a delay
    accumulates only when a check takes longer than the model takes to write a window.
    """

    def __init__(
        self,
        client: GuardrailClient,
        ref: GuardrailRef,
        note: Note,
        *,
        window_chars: int | None,
        prompt_tokens: int,
    ) -> None:
        self._client = client
        self._ref = ref
        self._note = note
        self._window = window_chars
        self._prompt_tokens = prompt_tokens
        self._context = ""
        self._unchecked = False

    @property
    def unchecked(self) -> bool:
        """Whether text was released unchecked (the guardrail was down and fails open)."""
        return self._unchecked

    async def run(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        held: list[Delta] = []
        pending: list[str] = []
        size = generated = 0
        async for delta in deltas:
            held.append(delta)
            generated += delta.generated
            text = checked_text(delta)
            if text:
                pending.append(text)
                size += len(text)
            if self._window is not None and size >= self._window:
                blocked = await self._blocked("".join(pending))
                if blocked is not None:
                    for end in self._ending(blocked, held, generated):
                        yield end
                    return
                for released in held:
                    yield released
                held, pending, size = [], [], 0
        if pending:
            blocked = await self._blocked("".join(pending))
            if blocked is not None:
                for end in self._ending(blocked, held, generated):
                    yield end
                return
        if not self._unchecked:
            self._note(GuardrailAction.PASSED)
        for released in held:
            yield released

    async def _blocked(self, text: str) -> str | None:
        """None if ``text`` may be released, else the message to answer with."""
        try:
            verdict = await self._client.check(self._ref, "OUTPUT", [self._context + text])
        except GuardrailUnavailableError as exc:
            logger.warning("output guardrail unavailable (%s): %s", self._ref.on_unavailable, exc)
            if self._ref.on_unavailable == "fail_open":
                self._unchecked = True
                self._note(GuardrailAction.UNAVAILABLE_PASSED)
                return None
            self._note(GuardrailAction.UNAVAILABLE_BLOCKED)
            return UNCHECKED_MESSAGE
        if verdict.intervened:
            self._note(GuardrailAction.OUTPUT_BLOCKED)
            return verdict.message
        self._context = (self._context + text)[-OVERLAP_CHARS:]
        return None

    def _ending(self, message: str, held: list[Delta], generated: int) -> list[Delta]:
        """The content_filter finish (with the message when not streaming), then the usage."""
        usage = next((d.usage for d in reversed(held) if d.usage is not None), None)
        if usage is None:
            usage = Usage(prompt_tokens=self._prompt_tokens, completion_tokens=generated)
        content = message if self._window is None else ""
        return [Delta(content=content, finish_reason="content_filter"), Delta(usage=usage)]
