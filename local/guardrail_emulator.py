"""A stand-in for Amazon Bedrock's ``ApplyGuardrail``, speaking its real wire protocol.

boto3's ``bedrock-runtime`` client reaches it through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``
(or ``endpoint_url=``); signatures are not checked. The shapes are the service model's
(botocore ``data/bedrock-runtime/2023-09-30/service-2.json``, rest-json):

* ``POST /guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply`` with
  ``{"source": "INPUT"|"OUTPUT", "content": [{"text": {"text": ...}}, ...]}``: a word filter.
  A content block containing a blocked word (case-insensitive, whole words) intervenes:
  ``action: GUARDRAIL_INTERVENED``, ``outputs: [{"text": <blocked messaging>}]`` and a
  ``wordPolicy`` assessment; otherwise ``action: NONE`` and no outputs.
* Failing (``fail_status``): the modeled error for that status, its name in
  ``x-amzn-ErrorType`` and ``{"message"}`` as the body, as botocore parses rest-json errors.
* ``GET|DELETE /_guardrail/requests``: the recorded checks / clear them.
* ``GET|PUT /_guardrail/config``: read / change the words, messages, failure and latency.

Run: ``python -m local.guardrail_emulator --port 8082 --block-words forbidden,secret``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.request_log import RequestLog

BLOCKED_INPUT_MESSAGE = "Sorry, the model cannot answer this question."
BLOCKED_OUTPUT_MESSAGE = "Sorry, the model cannot answer this question. (output)"
# The ApplyGuardrail errors of the service model, by HTTP status.
ERRORS: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


class GuardrailConfig(BaseModel):
    """What the stand-in does; every field has a default (no words: everything passes)."""

    model_config = ConfigDict(extra="forbid")

    block_words: tuple[str, ...] = ()
    blocked_input_message: str = BLOCKED_INPUT_MESSAGE
    blocked_output_message: str = BLOCKED_OUTPUT_MESSAGE
    fail_status: int | None = Field(None, description="Answer every check with this error.")
    fail_source: Literal["INPUT", "OUTPUT"] | None = Field(
        None, description="Fail only checks of this source (None: both)."
    )
    latency_ms: float = Field(0, ge=0, description="Time each check takes.")


class RecordedCheck(BaseModel):
    """One ApplyGuardrail request as received."""

    model_config = ConfigDict(frozen=True)

    guardrail_id: str
    guardrail_version: str
    source: str
    texts: list[str]


class GuardrailEmulator(RequestLog[RecordedCheck]):
    """Mutable state: the configuration and the request log. Thread-safe."""

    def __init__(self, config: GuardrailConfig | None = None) -> None:
        self.config = config or GuardrailConfig()
        super().__init__()

    def matches(self, text: str) -> list[str]:
        """The blocked words ``text`` contains."""
        return [
            word
            for word in self.config.block_words
            if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE)
        ]


def _state(request: Request) -> GuardrailEmulator:
    state = request.app.state.guardrail
    if not isinstance(state, GuardrailEmulator):
        raise TypeError("app.state.guardrail is not a GuardrailEmulator")
    return state


def _error(status: int, message: str) -> Response:
    code = ERRORS.get(status, "InternalServerException")
    headers = {"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": code}
    return JSONResponse({"message": message}, status, headers=headers)


def _texts(body: Any) -> list[str] | None:
    """The text blocks of an ApplyGuardrailRequest body, or None if it is malformed."""
    if not isinstance(body, dict) or body.get("source") not in ("INPUT", "OUTPUT"):
        return None
    content = body.get("content")
    if not isinstance(content, list):
        return None
    texts = []
    for block in content:
        text = block.get("text", {}).get("text") if isinstance(block, dict) else None
        if not isinstance(text, str):
            return None
        texts.append(text)
    return texts


def _usage(characters: int) -> dict[str, int]:
    units = max(1, math.ceil(characters / 1000))  # a text unit: up to 1000 characters
    return {"topicPolicyUnits": 0, "contentPolicyUnits": 0, "wordPolicyUnits": units,
            "sensitiveInformationPolicyUnits": 0, "sensitiveInformationPolicyFreeUnits": 0,
            "contextualGroundingPolicyUnits": 0}  # fmt: skip


async def apply_guardrail(request: Request) -> Response:
    """``ApplyGuardrail``."""
    state = _state(request)
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    texts = _texts(body)
    if texts is None:
        return _error(400, "Malformed ApplyGuardrail request.")
    source = body["source"]
    state.record(
        RecordedCheck(
            guardrail_id=request.path_params["identifier"],
            guardrail_version=request.path_params["version"],
            source=source,
            texts=texts,
        )
    )
    config = state.config
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    if config.fail_status is not None and config.fail_source in (None, source):
        return _error(config.fail_status, "Emulated guardrail failure.")
    characters = sum(len(text) for text in texts)
    found = sorted({word for text in texts for word in state.matches(text)})
    coverage = {"textCharacters": {"guarded": characters, "total": characters}}
    answer: dict[str, Any] = {"usage": _usage(characters), "guardrailCoverage": coverage}
    if not found:
        return JSONResponse({**answer, "action": "NONE", "outputs": [], "assessments": [{}]})
    message = config.blocked_input_message if source == "INPUT" else config.blocked_output_message
    words = [{"match": word, "action": "BLOCKED", "detected": True} for word in found]
    return JSONResponse({
        **answer,
        "action": "GUARDRAIL_INTERVENED",
        "actionReason": "Guardrail blocked.",
        "outputs": [{"text": message}],
        "assessments": [{"wordPolicy": {"customWords": words, "managedWordLists": []}}],
    })  # fmt: skip


async def list_requests(request: Request) -> Response:
    return JSONResponse([r.model_dump(mode="json") for r in _state(request).requests])


async def clear_requests(request: Request) -> Response:
    _state(request).clear_requests()
    return Response(status_code=204)


async def get_config(request: Request) -> Response:
    return JSONResponse(_state(request).config.model_dump(mode="json"))


async def put_config(request: Request) -> Response:
    """Replace the configuration from a GuardrailConfig JSON body (422 if it is invalid)."""
    state = _state(request)
    try:
        state.config = GuardrailConfig.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": json.loads(exc.json())}, 422)
    return JSONResponse(state.config.model_dump(mode="json"))


def create_guardrail_emulator(config: GuardrailConfig | None = None) -> Starlette:
    """The app; its state is ``app.state.guardrail`` (a :class:`GuardrailEmulator`)."""
    path = "/guardrail/{identifier}/version/{version}/apply"
    app = Starlette(
        routes=[
            Route(path, apply_guardrail, methods=["POST"]),
            Route("/_guardrail/requests", list_requests, methods=["GET"]),
            Route("/_guardrail/requests", clear_requests, methods=["DELETE"]),
            Route("/_guardrail/config", get_config, methods=["GET"]),
            Route("/_guardrail/config", put_config, methods=["PUT"]),
        ]
    )
    app.state.guardrail = GuardrailEmulator(config)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: serve the stand-in with uvicorn."""
    parser = argparse.ArgumentParser(
        prog="python -m local.guardrail_emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--block-words", default="", help="comma-separated words to block")
    parser.add_argument("--latency-ms", type=float, default=0, help="time each check takes")
    args = parser.parse_args(argv)
    words = tuple(word.strip() for word in args.block_words.split(",") if word.strip())
    config = GuardrailConfig(block_words=words, latency_ms=args.latency_ms)
    uvicorn.run(
        create_guardrail_emulator(config), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
