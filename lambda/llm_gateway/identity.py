"""Who is calling: only API Gateway's request context says (never a header the client chose).

Under the Lambda Web Adapter the request context arrives as the ``x-amzn-request-context``
header, which the adapter *sets* on every request (``HeaderMap::insert`` replaces any value a
client sent under that name), so its ``identity.apiKeyId`` is the key API Gateway verified.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers

from llm_gateway.authorizer import key_from_headers
from llm_gateway.contract import Consumer, ConsumerTable, Tier
from llm_gateway.errors import GatewayError

REQUEST_CONTEXT_HEADER = "x-amzn-request-context"


@dataclass(frozen=True)
class Caller:
    consumer: Consumer
    tier: Tier
    request_id: str


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def _context(raw: str) -> dict[str, Any] | None:
    """One request-context header value as a JSON object, or None."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def context_request_id(headers: Headers) -> str | None:
    """API Gateway's request id from the (first) request context, if there is one."""
    raw = headers.get(REQUEST_CONTEXT_HEADER)
    context = _context(raw) if raw is not None else None
    request_id = context.get("requestId") if context is not None else None
    return request_id if isinstance(request_id, str) else None


def _local_caller(headers: Headers, table: ConsumerTable, local_consumer: str | None) -> Caller:
    key = key_from_headers(headers)
    name = key if key is not None else local_consumer
    local = table.by_name(name) if name else None
    if local is None:
        message = (
            "Incorrect API key provided (local keys are consumer names)."
            if key is not None
            else "No API key identity on this request."
        )
        raise _unauthorized(message)
    return Caller(local, table.tier(local.tier), f"local-{uuid.uuid4().hex}")


def identify(headers: Headers, table: ConsumerTable, local_consumer: str | None) -> Caller:
    """The caller of this request, from API Gateway's request context.

    Without a request context (a local run: no API Gateway) the key a client sends the way
    API Gateway accepts it (``Authorization: Bearer <key>`` or ``x-api-key``, read by the same
    function as the authorizer) names the consumer, local keys being consumer names; with no
    key, ``local_consumer`` is the consumer to act as. The deployed function never sets
    ``local_consumer``, and in Lambda the adapter always supplies a context, so neither
    fallback can be reached there.
    """
    contexts = headers.getlist(REQUEST_CONTEXT_HEADER)
    if len(contexts) > 1:
        raise _unauthorized("Ambiguous request context.")
    if not contexts:
        return _local_caller(headers, table, local_consumer)
    context = _context(contexts[0]) or {}
    identity = context.get("identity")
    if not isinstance(identity, dict) or "apiKeyId" not in identity:
        raise _unauthorized("No API key identity on this request.")
    key_id = identity["apiKeyId"]
    request_id = str(context.get("requestId") or uuid.uuid4().hex)
    consumer = table.consumers.get(key_id) if isinstance(key_id, str) else None
    if consumer is None:
        raise _unauthorized("This API key is not registered with the gateway.")
    return Caller(consumer, table.tier(consumer.tier), request_id)
