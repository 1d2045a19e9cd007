"""A route's guardrail and response cache, placed around the request path (app.py calls these).

In request order:

1. :meth:`Policies.before_model`: the input guardrail (a block or an outage failing closed
   raises the client's error: nothing reserved, nothing invoked), then the cache lookup for a
   cacheable request (a :class:`CacheLookup`, hit or miss).
2. A hit: :func:`replay_stream` stands in for the backend stream (no upstream call), through
   the same relay or aggregation as a model's answer; app.py charges it per ``policy.charge``.
3. A miss (or no cache): :meth:`Policies.around` wraps the opened backend stream: the output
   guardrail holds text back until it passed (guardrail.py), the recording gathers what the
   client was sent, and the returned end hook stores a complete, checked answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llm_gateway import admission
from llm_gateway.adapters import Delta, Usage
from llm_gateway.guardrail import GuardrailClient, OutputGuard, check_input
from llm_gateway.response_cache import (
    CachedAnswer,
    Recording,
    ResponseCache,
    cache_key,
    cacheable,
)
from llm_gateway.service import OpenStream, pipe

if TYPE_CHECKING:
    from botocore.session import Session

    from llm_gateway.contract import CachePolicy, Route, RouteTable
    from llm_gateway.identity import Caller
    from llm_gateway.request import ChatRequest
    from llm_gateway.service import OnEnd, Outcome
    from llm_gateway.settings import Settings
    from llm_gateway.telemetry import RequestTelemetry

CACHE_HEADER = "x-llm-cache"


@dataclass(frozen=True)
class CacheLookup:
    """A cacheable request's key and policy, and the stored answer if there is one."""

    key: str
    policy: CachePolicy
    answer: CachedAnswer | None

    @property
    def headers(self) -> dict[str, str]:
        return {CACHE_HEADER: "miss" if self.answer is None else "hit"}


class _NoUpstream:
    """The upstream of a replayed answer: nothing to read, nothing to close."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    def close(self) -> None:
        return None


async def _no_more() -> AsyncIterator[list[Delta]]:
    return
    yield  # an async generator that yields nothing


def replay_stream(route: Route, answer: CachedAnswer) -> OpenStream:
    """A stored answer as an opened stream of the backend that wrote it."""
    backend = next((b for b in route.backends if b.name == answer.backend), None)
    if backend is None:  # the key holds the route's backend names: only a hand-made item
        backend = route.backends[0].model_copy(update={"name": answer.backend})
    return OpenStream(backend=backend, first=answer.deltas(), rest=_no_more(),
                      upstream=_NoUpstream(), attempts=0, upstream_ttfb_s=0.0)  # fmt: skip


class Policies:
    """The guardrail and cache clients (each None when no route uses it)."""

    def __init__(
        self, guardrails: GuardrailClient | None = None, cache: ResponseCache | None = None
    ) -> None:
        self.guardrails = guardrails
        self.cache = cache

    @classmethod
    def from_env(
        cls, settings: Settings, environ: Mapping[str, str], *, session: Session | None = None
    ) -> Policies:
        """Clients for what the routes use (botocore's, configured by the environment, from
        ``session``: default, a new one each)."""
        routes = settings.routes.routes
        guarded = any(route.guardrail is not None for route in routes)
        guardrails = GuardrailClient.from_env(session=session) if guarded else None
        return cls(guardrails, ResponseCache.from_env(environ, session=session))

    def require(self, table: RouteTable) -> None:
        """Refuse to serve routes whose guardrail or cache has no client (a wiring bug)."""
        for route in table.routes:
            if route.guardrail is not None and self.guardrails is None:
                raise ValueError(f"route {route.model!r} has a guardrail but no client was given")
            if route.cache is not None and self.cache is None:
                raise ValueError(f"route {route.model!r} caches but no cache store was given")

    async def before_model(
        self, route: Route, chat: ChatRequest, caller: Caller | None, telemetry: RequestTelemetry
    ) -> CacheLookup | None:
        """The input check, then the cache lookup (None: the request is not cacheable)."""
        ref = route.guardrail
        if ref is not None and ref.check_input:
            assert self.guardrails is not None  # require()
            await check_input(self.guardrails, ref, chat, telemetry.note_guardrail)
        policy = route.cache
        if policy is None or self.cache is None or not cacheable(policy, chat):
            return None
        key = cache_key(route, chat, caller.consumer.name if caller else None)
        answer = await self.cache.lookup(key)
        telemetry.cache = "miss" if answer is None else "hit"
        return CacheLookup(key, policy, answer)

    def around(
        self,
        route: Route,
        chat: ChatRequest,
        stream: OpenStream,
        lookup: CacheLookup | None,
        prompt: int,
        telemetry: RequestTelemetry,
    ) -> tuple[OpenStream, OnEnd | None]:
        """The stream as the client gets it (checked, recorded) and what its end also does."""
        if lookup is not None and lookup.answer is not None:
            return stream, None  # a replay: checked when it was stored
        guard: OutputGuard | None = None
        ref = route.guardrail
        if ref is not None and ref.check_output:
            assert self.guardrails is not None  # require()
            guard = OutputGuard(
                self.guardrails, ref, telemetry.note_guardrail,
                window_chars=ref.window_chars if chat.stream else None, prompt_tokens=prompt,
            )  # fmt: skip
            stream = pipe(stream, guard.run)
        cache = self.cache
        if lookup is None or cache is None:
            return stream, None
        recording = Recording()
        stream = pipe(stream, recording.tap)
        backend = stream.backend.name

        async def store(outcome: Outcome) -> None:
            if outcome.error is not None or (guard is not None and guard.unchecked):
                return
            answer = recording.answer(backend, Usage(*admission.token_counts(outcome, prompt)))
            if answer is not None:
                await cache.store(lookup.key, answer, lookup.policy.ttl_s)

        return stream, store
