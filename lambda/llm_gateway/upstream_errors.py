"""SageMaker runtime failures by kind: :func:`classify` maps what botocore raises (or what
:mod:`llm_gateway.upstream_async` raises in botocore's place) to an :class:`UpstreamError`, so
callers decide what the client sees (and whether to fall back) without knowing botocore.
"""

from __future__ import annotations

import re

from botocore.exceptions import ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError
from urllib3.exceptions import ReadTimeoutError as StreamReadTimeoutError

from llm_gateway.errors import GatewayError


class UpstreamError(Exception):
    """A backend failure, by kind. ``retryable`` marks faults another backend might not have."""

    def __init__(
        self, kind: str, detail: str, *, retryable: bool, original_status: int | None = None
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retryable = retryable
        self.original_status = original_status

    def to_gateway_error(self, *, retry_after_s: int | None = None) -> GatewayError:
        """What the client sees: OpenAI-format, no upstream internals beyond a 4xx reason;
        ``retry_after_s`` becomes the ``Retry-After`` of a ``no_capacity`` 503."""
        if self.kind == NO_CAPACITY:
            return GatewayError(
                503,
                "The model is scaled to zero and is starting; retry later.",
                type="server_error",
                code="model_scaling_from_zero",
                headers={"Retry-After": str(retry_after_s)} if retry_after_s else None,
            )
        if self.kind == "model_rejected":
            return GatewayError(400, f"The model rejected the request: {self.detail}",
                                code="model_rejected_request")  # fmt: skip
        status, code, message = _CLIENT_VIEW.get(self.kind, _CLIENT_VIEW["internal"])
        return GatewayError(status, message, type="server_error", code=code)


NO_CAPACITY = "no_capacity"
"""An inference component with no copies (scaled to zero, or not yet scaled out).

What SageMaker answers then is not in its API reference: the operation's only modeled 400 is
``ValidationError`` (botocore ``data/sagemaker-runtime/2017-05-13/service-2.json``,
InvokeEndpointWithResponseStream errors), and a measured call "at zero" returned "HTTP 400
`has no capacity`" (field report: huggingface/skills PR #215, the SageMaker scale-to-zero
skill's "Measured behaviour" table, us-east-1, July 2026). So a ``ValidationError`` whose
message says "no capacity" is this kind; the exact wording is unverified. The call is not
wasted: SageMaker counts it in ``NoCapacityInvocationFailures``, the metric whose alarm scales
the component out from zero ("SageMaker AI emits this metric when an endpoint receives an
inference request, but the endpoint has no active instances to serve the request",
docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-zero-instances.html)."""
_NO_CAPACITY_MESSAGE = re.compile(r"\bno capacity\b", re.IGNORECASE)

_CLIENT_VIEW: dict[str, tuple[int, str, str]] = {
    "unavailable": (503, "model_unavailable", "The model is overloaded or not ready; retry."),
    "timeout": (504, "model_timeout", "The model did not respond in time."),
    "connection": (502, "upstream_unreachable", "The model endpoint could not be reached."),
    "misconfigured": (502, "upstream_misconfigured", "The model endpoint is not available."),
    "model_error": (502, "model_error", "The model failed while generating."),
    "internal": (502, "upstream_error", "The model endpoint failed."),
}

# SageMaker runtime error codes (before the stream and as stream exception events).
_BY_CODE: dict[str, tuple[str, bool]] = {
    "ServiceUnavailable": ("unavailable", True),
    "ThrottlingException": ("unavailable", True),
    "InternalFailure": ("internal", True),
    "InternalStreamFailure": ("internal", True),
    "InternalDependencyException": ("internal", True),
    "ModelNotReadyException": ("unavailable", True),
    "ValidationError": ("misconfigured", True),
    "StreamBroken": ("model_error", True),
    "ModelInvocationTimeExceeded": ("timeout", True),
}


def classify(exc: Exception) -> UpstreamError:
    """Map a botocore exception to an :class:`UpstreamError`."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))[:300]
        if code == "ModelError":
            original = exc.response.get("OriginalStatusCode")
            status = int(original) if str(original).isdigit() else None
            if status is not None and 400 <= status < 500:
                detail = str(exc.response.get("OriginalMessage") or message)[:300]
                return UpstreamError(
                    "model_rejected", detail, retryable=False, original_status=status
                )
            return UpstreamError("model_error", message, retryable=True, original_status=status)
        if code == "ModelStreamError":
            stream_code = str(exc.response.get("ErrorCode") or error.get("ErrorCode") or "")
            kind, retryable = _BY_CODE.get(stream_code, ("model_error", True))
            return UpstreamError(kind, message, retryable=retryable)
        if code == "ValidationError" and _NO_CAPACITY_MESSAGE.search(message):
            return UpstreamError(NO_CAPACITY, message, retryable=True)
        kind, retryable = _BY_CODE.get(code, ("internal", True))
        return UpstreamError(kind, f"{code}: {message}", retryable=retryable)
    # Mid-stream (even before the first token) botocore's EventStream reads urllib3's
    # HTTPResponse.stream() unwrapped (botocore/eventstream.py, _create_raw_event_generator), so
    # a read timeout there is urllib3's ReadTimeoutError (urllib3/response.py, _error_catcher),
    # not botocore's (raised while waiting for the response headers).
    if isinstance(exc, ReadTimeoutError | StreamReadTimeoutError | ConnectTimeoutError):
        return UpstreamError("timeout", type(exc).__name__, retryable=True)
    if isinstance(exc, ConnectionError):
        return UpstreamError("connection", type(exc).__name__, retryable=True)
    return UpstreamError("internal", type(exc).__name__, retryable=True)
