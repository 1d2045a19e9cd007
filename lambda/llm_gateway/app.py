"""The ASGI app (Starlette): routes, body limit, identity, quotas, and OpenAI-format errors;
a route's guardrail and response cache come from policies.py."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llm_gateway import admission
from llm_gateway.contract import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS
from llm_gateway.errors import GatewayError, client_disconnected, internal_error, model_not_found
from llm_gateway.identity import Caller, context_request_id, identify
from llm_gateway.policies import CacheLookup, Policies, replay_stream
from llm_gateway.quota import QuotaStore
from llm_gateway.quota_model import QuotaExceeded, QuotaUnavailable, Reservation
from llm_gateway.request import ChatRequest, parse_chat_request
from llm_gateway.routing import BackendHealth, attempt_order
from llm_gateway.service import OpenStream, Outcome, aggregate, open_stream, sse_events
from llm_gateway.sse_response import EventStreamResponse
from llm_gateway.telemetry import RequestTelemetry

if TYPE_CHECKING:
    from llm_gateway.contract import Backend
    from llm_gateway.contract import Route as ModelRoute
    from llm_gateway.service import Invoker, OnEnd
    from llm_gateway.settings import Settings

logger = logging.getLogger(__name__)

READINESS_PATH = "/healthz"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    too_large = GatewayError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_disconnected() from None
    return b"".join(chunks)


def _request_id(request: Request) -> str:
    """API Gateway's request id when there is one (the Web Adapter's context), else a new one."""
    return context_request_id(request.headers) or f"req-{uuid.uuid4().hex}"


def _error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _counted(
    reservation: Reservation | None, counting: asyncio.Future[Reservation | None]
) -> Reservation | None:
    """The reservation with what is left of the quota if the read-back is done by the time the
    model has produced its first token, else as it is: the first byte does not wait for it
    (the headers then give the limit and reset but not ``x-ratelimit-remaining-tokens``)."""
    if counting.done() and not counting.cancelled() and counting.exception() is None:
        return counting.result()
    counting.cancel()
    return reservation


async def _abandon(opening: asyncio.Task[OpenStream]) -> None:
    """Stop opening a backend stream: cancel the attempt, or close the stream it has opened."""
    opening.cancel()
    try:
        stream = await opening
    except (asyncio.CancelledError, GatewayError):
        return  # cancelled mid-attempt (service._attempt closes its upstream), or failed anyway
    stream.upstream.close()


class Gateway:
    """Request handling state: settings, the backend invoker, quotas, backend health."""

    def __init__(
        self,
        settings: Settings,
        invoker: Invoker,
        *,
        quota: QuotaStore | None = None,
        rng: random.Random | None = None,
        policies: Policies | None = None,
    ) -> None:
        if settings.consumers is not None and quota is None:
            raise ValueError("consumers are configured but no quota store was given")
        self.policies = policies or Policies()
        self.policies.require(settings.routes)
        self.settings = settings
        self.invoker = invoker
        self.quota = quota
        self.rng = rng or random.Random()
        self.health = BackendHealth(
            failures=settings.routes.cooldown_failures, cooldown_s=settings.routes.cooldown_s
        )

    def _caller(self, request: Request) -> Caller | None:
        table = self.settings.consumers
        if table is None:
            return None
        return identify(request.headers, table, self.settings.local_consumer)

    async def _open(
        self,
        chat: ChatRequest,
        route: ModelRoute,
        caller: Caller | None,
        allowance: int | None,
        failed: list[str],
        telemetry: RequestTelemetry,
    ) -> OpenStream:
        """Open the first backend of the route that answers (``failed`` collects the others)."""

        def max_tokens(backend: Backend) -> int:
            if chat.output_limit is not None:
                return chat.output_limit
            return min(allowance or backend.max_tokens_default, backend.max_tokens_default)

        order = attempt_order(
            route,
            consumer=caller.consumer.name if caller else "",
            rng=self.rng,
            health=self.health,
        )
        return await open_stream(
            chat,
            order,
            self.invoker,
            max_tokens=max_tokens,
            first_byte_timeout_s=route.first_byte_timeout_s,
            health=self.health,
            failed=failed,
            on_no_capacity=telemetry.note_no_capacity,
        )

    async def _reserve(
        self, caller: Caller | None, amount: int, *, read_back: bool = True
    ) -> Reservation | None:
        """Hold ``amount`` tokens for the caller, or raise the error the client sees."""
        if caller is None or self.quota is None:
            return None
        try:
            return await asyncio.to_thread(
                self.quota.reserve,
                request_id=caller.request_id,
                consumer=caller.consumer.name,
                tier=caller.tier,
                amount=amount,
                read_back=read_back,
            )
        except QuotaExceeded as exc:
            raise admission.quota_error(exc) from None
        except QuotaUnavailable:
            logger.exception("quota store unavailable")
            raise admission.quota_unavailable() from None
        except Exception:  # e.g. a request id another consumer has reserved (a ValueError)
            logger.exception("reserving tokens for %s failed", caller.request_id)
            raise internal_error() from None

    def _read_back(self, reservation: Reservation | None) -> asyncio.Future[Reservation | None]:
        """``quota.read_back`` of ``reservation`` on a worker thread, as a future."""
        if reservation is None or self.quota is None:
            future: asyncio.Future[Reservation | None] = asyncio.Future()
            future.set_result(reservation)
            return future
        return asyncio.ensure_future(asyncio.to_thread(self.quota.read_back, reservation))

    async def _settle(self, reservation: Reservation | None, used: int) -> None:
        """Charge ``used`` tokens instead of the reservation, whatever the outcome. A store
        fault leaves the reservation charged in full (quota.py) and the response as it is."""
        if reservation is None or self.quota is None:
            return
        try:
            await asyncio.to_thread(self.quota.settle, reservation, used)
        except QuotaUnavailable as exc:
            logger.warning("settling %s failed: %s", reservation.request_id, exc)

    def _finisher(
        self,
        reservation: Reservation | None,
        prompt: int,
        telemetry: RequestTelemetry,
        also: OnEnd | None = None,
    ) -> OnEnd:
        """What happens when the response ends: settle the tokens (and ``also``, e.g. store
        the answer in the cache), then emit telemetry."""

        async def finish(outcome: Outcome) -> None:
            input_tokens, output_tokens = admission.token_counts(outcome, prompt)
            telemetry.input_tokens, telemetry.output_tokens = input_tokens, output_tokens
            if outcome.usage is not None:
                telemetry.cached_tokens = outcome.usage.cached_tokens
                telemetry.reasoning_tokens = outcome.usage.reasoning_tokens
            if outcome.error is not None:
                telemetry.fail(outcome.error.status, outcome.error.code)
            settle = self._settle(reservation, input_tokens + output_tokens)
            if also is None:
                await settle
            else:
                await asyncio.gather(settle, also(outcome))
            telemetry.emit()

        return finish

    async def chat_completions(self, request: Request) -> Response:
        telemetry = RequestTelemetry(request_id=_request_id(request))
        try:
            return await self._chat_completions(request, telemetry)
        except GatewayError as error:
            telemetry.fail(error.status, error.code)
            telemetry.emit()
            raise

    async def _chat_completions(self, request: Request, telemetry: RequestTelemetry) -> Response:
        raw = await read_body(request, self.settings.max_request_bytes)
        chat = parse_chat_request(raw)
        telemetry.stream = chat.stream
        caller = self._caller(request)
        if caller is not None:
            telemetry.consumer = caller.consumer.name
            telemetry.request_id = caller.request_id
        route = self.settings.routes.get(chat.model)
        if route is None or (caller is not None and not caller.consumer.may_use(chat.model)):
            raise model_not_found(chat.model)
        telemetry.route = route.model  # only configured aliases: a bounded dimension
        lookup = await self.policies.before_model(route, chat, caller, telemetry)
        if lookup is not None and lookup.answer is not None:
            return await self._replay(chat, route, caller, lookup, telemetry)
        allowance = admission.output_allowance(chat, caller.tier if caller else None)
        failed: list[str] = []
        # The backend is opened while the tokens are reserved; every way out uses or stops it.
        opening = asyncio.create_task(self._open(chat, route, caller, allowance, failed, telemetry))
        prompt = admission.prompt_estimate(chat, route)
        try:
            reserved = admission.reserved_output(allowance, prompt, route)
            reservation = await self._reserve(caller, prompt + reserved, read_back=False)
        except BaseException:
            await _abandon(opening)
            raise
        # What is left of the quota is read while the model starts: only the headers need it.
        counting = self._read_back(reservation)
        try:
            stream = await opening
        except GatewayError:
            counting.cancel()
            telemetry.attempts = telemetry.fallbacks = len(failed)
            await self._settle(reservation, 0)  # nothing reached the client: release it all
            raise
        except BaseException:
            counting.cancel()
            raise
        reservation = _counted(reservation, counting)
        telemetry.backend = stream.backend.name
        telemetry.attempts = stream.attempts
        telemetry.fallbacks = len(failed)
        telemetry.upstream_ttfb_s = stream.upstream_ttfb_s
        return await self._respond(chat, route, stream, reservation, prompt, telemetry, lookup)

    async def _replay(
        self,
        chat: ChatRequest,
        route: ModelRoute,
        caller: Caller | None,
        lookup: CacheLookup,
        telemetry: RequestTelemetry,
    ) -> Response:
        """A cache hit, served like a model's answer: its stored usage reserved and settled
        (``charge: usage``), or nothing (``none``)."""
        assert lookup.answer is not None
        usage = lookup.answer.usage
        charged = lookup.policy.charge == "usage"
        reservation = await self._reserve(caller, usage.total_tokens) if charged else None
        stream = replay_stream(route, lookup.answer)
        return await self._respond(
            chat, route, stream, reservation, usage.prompt_tokens, telemetry, lookup
        )

    async def _respond(
        self,
        chat: ChatRequest,
        route: ModelRoute,
        stream: OpenStream,
        reservation: Reservation | None,
        prompt: int,
        telemetry: RequestTelemetry,
        lookup: CacheLookup | None,
    ) -> Response:
        """Relay (or aggregate) the opened stream; its end settles the tokens and emits."""
        stream, also = self.policies.around(route, chat, stream, lookup, prompt, telemetry)
        finish = self._finisher(reservation, prompt, telemetry, also)
        headers = {"x-llm-backend": stream.backend.name}
        if reservation is not None:
            headers |= admission.ratelimit_headers(reservation.headline, reservation.remaining)
        if lookup is not None:
            headers |= lookup.headers
        if chat.stream:
            events = sse_events(stream, include_usage=chat.include_usage, on_end=finish,
                                on_first_byte=telemetry.first_byte)  # fmt: skip
            return EventStreamResponse(events, headers={**SSE_HEADERS, **headers})
        body = await aggregate(stream, on_end=finish)
        return JSONResponse(body, headers=headers)

    async def list_models(self, request: Request) -> Response:
        caller = self._caller(request)
        data = [
            {"id": route.model, "object": "model", "created": 0, "owned_by": "llm-serving"}
            for route in self.settings.routes.routes
            if caller is None or caller.consumer.may_use(route.model)
        ]
        return JSONResponse({"object": "list", "data": data})


def _cors(origins: tuple[str, ...]) -> list[Middleware]:
    """Browser clients on ``origins`` may read responses (the preflight is API Gateway's);
    none when CORS is off."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_ALLOW_HEADERS),
            expose_headers=list(CORS_EXPOSE_HEADERS),
            max_age=600,
        )
    ]


def create_app(
    settings: Settings,
    invoker: Invoker,
    *,
    quota: QuotaStore | None = None,
    rng: random.Random | None = None,
    policies: Policies | None = None,
) -> Starlette:
    """The gateway app for ``settings``, reaching backends through ``invoker`` (and the
    guardrail and cache clients of ``policies``, which routes that use them need)."""
    gateway = Gateway(settings, invoker, quota=quota, rng=rng, policies=policies)

    async def ready(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return _error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"Invalid URL ({request.method} {request.url.path})"
        if exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return _error_response(GatewayError(exc.status_code, message))

    async def unexpected_error(_: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return _error_response(internal_error())

    app = Starlette(
        middleware=_cors(settings.cors_origins),
        routes=[
            Route("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
            Route("/v1/models", gateway.list_models, methods=["GET"]),
            Route(READINESS_PATH, ready, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: gateway_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
    app.state.gateway = gateway
    return app
