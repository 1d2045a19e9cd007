"""What every backend format is turned into, and the adapter interface."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llm_gateway.contract import Backend
    from llm_gateway.errors import GatewayError
    from llm_gateway.request import ChatRequest

FinishReason = str
""""stop" | "length" | "tool_calls" (OpenAI's values; "error" never reaches a client)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; the details only where the backend reported them."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    """``prompt_tokens_details.cached_tokens`` (vLLM: prefix-cache hits)."""
    reasoning_tokens: int | None = None
    """``completion_tokens_details.reasoning_tokens``."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Delta:
    """One step of a generation, independent of the backend's wire format."""

    content: str = ""
    reasoning: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    """OpenAI ``delta.tool_calls`` items as the backend sent them (``index``, then ``id``,
    ``type``, ``function.name`` once and ``function.arguments`` in pieces); relayed unchanged."""
    logprobs: dict[str, Any] | None = None
    """The choice's ``logprobs`` object (``{"content": [...]}``), relayed unchanged."""

    @property
    def generated(self) -> bool:
        """Whether the delta carries generated output (text, reasoning, tool calls)."""
        return bool(self.content or self.reasoning or self.tool_calls)


class InBandError(Exception):
    """The backend reported a failure inside an HTTP-200 stream (error line, finish "error")."""


class StreamAdapter(Protocol):
    """Per-request translator between the OpenAI API and one backend format."""

    def unsupported(self, request: ChatRequest, backend: Backend) -> GatewayError | None:
        """The 400 for a request this backend cannot serve (e.g. ``tools`` on a backend that
        takes a plain prompt, images on one without ``image_input``), or None. Checked before
        the backend is invoked."""
        ...

    def request_body(self, request: ChatRequest, backend: Backend, max_tokens: int) -> bytes:
        """The body to send to the endpoint (always a streaming request), generating at most
        ``max_tokens``."""
        ...

    def parse(self, payload: str) -> Iterable[Delta]:
        """Deltas carried by one event payload; raises :class:`InBandError`."""
        ...


def load_event(payload: str) -> dict[str, Any]:
    """Parse one event payload as a JSON object, or fail as an in-band error."""
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise InBandError("the model sent a malformed stream event") from exc
    if not isinstance(value, dict):
        raise InBandError("the model sent a malformed stream event")
    return value
