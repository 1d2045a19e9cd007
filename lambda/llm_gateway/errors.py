"""OpenAI-format errors: every rejection the gateway makes is one of these."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error the client sees as ``{"error": {message, type, param, code}}`` with ``status``.

    ``message`` is written for the client: never a stack trace or an upstream's raw internals.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __repr__(self) -> str:
        return (
            f"GatewayError({self.status}, {self.message!r}, type={self.type!r}, code={self.code!r})"
        )


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def internal_error() -> GatewayError:
    return GatewayError(500, "The gateway failed to process the request.", type="server_error")


def client_disconnected() -> GatewayError:
    """The client left before sending its whole request: never delivered, only logged (499 is
    nginx's "client closed request")."""
    return GatewayError(
        499, "The client closed the connection before sending the whole request.",
        code="client_disconnected",
    )  # fmt: skip
