"""Who is calling: only API Gateway's request context says (never a header the client chose).

Under the Lambda Web Adapter the request context arrives as the ``x-amzn-request-context``
header, which the adapter *sets* on every request (``HeaderMap::insert`` replaces any value a
client sent under that name), so its ``identity.apiKeyId`` is the key API Gateway verified.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from starlette.datastructures import Headers

from llm_gateway.consumers import Consumer, ConsumerTable, Tier
from llm_gateway.errors import GatewayError

REQUEST_CONTEXT_HEADER = "x-amzn-request-context"


@dataclass(frozen=True)
class Caller:
    consumer: Consumer
    tier: Tier
    request_id: str


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def identify(headers: Headers, table: ConsumerTable, local_consumer: str | None) -> Caller:
    """The caller of this request, from API Gateway's request context.

    Without a request context (a local run: no API Gateway), ``local_consumer`` names the
    consumer to act as; the deployed function never sets it, and in Lambda the adapter always
    supplies a context, so the fallback cannot be reached there.
    """
    contexts = headers.getlist(REQUEST_CONTEXT_HEADER)
    if len(contexts) > 1:
        raise _unauthorized("Ambiguous request context.")
    if not contexts:
        local = table.by_name(local_consumer) if local_consumer else None
        if local is None:
            raise _unauthorized("No API key identity on this request.")
        return Caller(local, table.tier(local.tier), f"local-{uuid.uuid4().hex}")
    try:
        context = json.loads(contexts[0])
        key_id = context["identity"]["apiKeyId"]
        request_id = str(context.get("requestId") or uuid.uuid4().hex)
    except (ValueError, KeyError, TypeError):
        raise _unauthorized("No API key identity on this request.") from None
    consumer = table.consumers.get(key_id) if isinstance(key_id, str) else None
    if consumer is None:
        raise _unauthorized("This API key is not registered with the gateway.")
    return Caller(consumer, table.tier(consumer.tier), request_id)
