"""SageMaker runtime failures by kind: :func:`classify` maps what botocore raises (or what
:mod:`llm_gateway.upstream_async` raises in botocore's place) to an :class:`UpstreamError`, so
callers decide what the client sees (and whether to fall back) without knowing botocore.
"""

from __future__ import annotations

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

    def to_gateway_error(self) -> GatewayError:
        """What the client sees: OpenAI-format, no upstream internals beyond a 4xx reason."""
        if self.kind == "model_rejected":
            return GatewayError(400, f"The model rejected the request: {self.detail}",
                                code="model_rejected_request")  # fmt: skip
        status, code, message = _CLIENT_VIEW.get(self.kind, _CLIENT_VIEW["internal"])
        return GatewayError(status, message, type="server_error", code=code)


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
