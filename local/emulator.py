"""A SageMaker-runtime emulator speaking the real wire protocol (rest-json + event stream).

Point any SageMaker runtime client at it (``endpoint_url=`` or the standard
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``); signatures are not checked. Routes:

* ``POST /endpoints/{name}/invocations-response-stream``: ``InvokeEndpointWithResponseStream``;
  ``application/vnd.amazon.eventstream`` frames, each written as soon as it is produced.
* ``POST /endpoints/{name}/invocations``: ``InvokeEndpoint`` (buffered).
* ``GET|DELETE /_emulator/requests``: the recorded invocations / clear them.
* ``POST|DELETE|GET /_emulator/barriers/{name}``: release / re-arm / inspect a barrier.
* ``GET /_emulator/scenarios``, ``PUT /_emulator/scenarios/{name}``: read / set scenarios.

An invocation naming an inference component (``X-Amzn-SageMaker-Inference-Component``) is
answered by the scenario under the component's name; a component scenario with ``copies: 0``
answers the no-capacity error (:func:`no_capacity`).

Run: ``python -m local.emulator --port 8081 --scenarios scenarios.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import uvicorn
import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from local.eventstream import internal_stream_failure, model_stream_error, payload_part
from local.request_log import RequestLog
from local.scenarios import Fault, PreStreamError, Scenario, render_body, stream_steps

ACCOUNT_ID = "000000000000"
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
VARIANT = "AllTraffic"

# HTTP statuses from the service model's error shapes (ThrottlingException is not modeled
# there; AWS's common-errors reference gives it 400).
ERROR_STATUS: dict[PreStreamError, int] = {
    "ModelError": 424,
    "ValidationError": 400,
    "ThrottlingException": 400,
    "InternalFailure": 500,
    "ServiceUnavailable": 503,
}
_DEFAULT_ERROR_MESSAGE: dict[PreStreamError, str] = {
    "ModelError": "",  # composed from the original status and message
    "ValidationError": "Emulated validation error.",
    "ThrottlingException": "Rate exceeded",
    "InternalFailure": "An internal failure occurred.",
    "ServiceUnavailable": "The service is unavailable. Try your call again.",
}
_SCOPE_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


class RecordedRequest(BaseModel):
    """One invocation as the emulator received it (header names lower-cased)."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    operation: Literal["InvokeEndpoint", "InvokeEndpointWithResponseStream"]
    path: str
    headers: dict[str, str]
    body: Any
    raw_body: str


class Barriers:
    """Named latches: released once, they stay released until re-armed. Thread-safe.

    Release may come from any thread (a test) or the server's event loop (the admin API);
    :meth:`wait` suspends only the awaiting coroutine, never the loop.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._released: set[str] = set()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def release(self, name: str) -> None:
        """Open ``name`` (creating it); current and future waiters pass."""
        with self._cond:
            self._released.add(name)
            waiters = self._waiters.pop(name, [])
            self._cond.notify_all()
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its waiter is gone
                loop.call_soon_threadsafe(event.set)

    def rearm(self, name: str) -> None:
        """Close ``name`` again so the next waiter blocks."""
        with self._cond:
            self._released.discard(name)

    def is_released(self, name: str) -> bool:
        """Whether ``name`` is currently open."""
        with self._cond:
            return name in self._released

    def waiting(self, name: str) -> int:
        """How many streams are currently held at ``name``."""
        with self._cond:
            return len(self._waiters.get(name, []))

    def wait_for_waiters(self, name: str, count: int = 1, timeout: float = 5.0) -> bool:
        """Block the calling (non-loop) thread until ``count`` streams wait at ``name``."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._waiters.get(name, [])) >= count, timeout)

    async def wait(self, name: str, timeout: float) -> bool:
        """Wait until ``name`` is released; ``False`` if ``timeout`` seconds pass first."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._cond:
            if name in self._released:
                return True
            self._waiters.setdefault(name, []).append(entry)
            self._cond.notify_all()
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._cond:
                waiters = self._waiters.get(name, [])
                if entry in waiters:
                    waiters.remove(entry)


class _Recutter:
    """Re-cuts the upstream byte stream into parts of exactly ``size`` bytes (None: as written)."""

    def __init__(self, size: int | None) -> None:
        self._size = size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if self._size is None:
            return [data] if data else []
        self._buffer += data
        cut = len(self._buffer) - len(self._buffer) % self._size
        parts = [bytes(self._buffer[i : i + self._size]) for i in range(0, cut, self._size)]
        del self._buffer[:cut]
        return parts

    def flush(self) -> list[bytes]:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [rest] if rest else []


class Emulator(RequestLog[RecordedRequest]):
    """Mutable emulator state: scenarios, recorded requests (the log), barriers."""

    def __init__(
        self, scenarios: Mapping[str, Scenario] | None = None, default: Scenario | None = None
    ) -> None:
        self.scenarios: dict[str, Scenario] = dict(scenarios or {})
        self.default = default
        self.barriers = Barriers()
        super().__init__()

    def scenario_for(self, endpoint: str) -> Scenario | None:
        """The endpoint's scenario, else the default, else None (endpoint not found)."""
        return self.scenarios.get(endpoint, self.default)

    def set_scenario(self, endpoint: str, scenario: Scenario) -> None:
        """Set (or replace) what ``endpoint`` answers."""
        self.scenarios[endpoint] = scenario

    async def frames(
        self, scenario: Scenario, request: Mapping[str, Any] | None
    ) -> AsyncIterator[bytes]:
        """The event-stream frames of one streamed response, yielded as they are produced."""
        recutter = _Recutter(scenario.part_size)
        tokens_sent = 0
        for step in stream_steps(scenario, request):
            if isinstance(step, Fault):
                for part in recutter.flush():
                    yield payload_part(part)
                yield _fault_frame(step)
                return
            if step.token and tokens_sent and scenario.token_delay_ms:
                await asyncio.sleep(scenario.token_delay_ms / 1000)
            if step.token and not tokens_sent and scenario.first_token_delay_ms:
                await asyncio.sleep(scenario.first_token_delay_ms / 1000)
            for part in recutter.feed(step.data):
                yield payload_part(part)
            if not step.token:
                continue
            tokens_sent += 1
            if tokens_sent == 1 and scenario.barrier is not None:
                for part in recutter.flush():
                    yield payload_part(part)
                if not await self.barriers.wait(scenario.barrier, scenario.barrier_timeout_s):
                    yield model_stream_error("barrier timeout", "ModelInvocationTimeExceeded")
                    return
        for part in recutter.flush():
            yield payload_part(part)


def _fault_frame(fault: Fault) -> bytes:
    if fault.exception == "ModelStreamError":
        return model_stream_error(fault.message, fault.error_code)
    return internal_stream_failure(fault.message)


def _request_id_headers() -> dict[str, str]:
    return {"x-amzn-RequestId": str(uuid.uuid4())}


def error_response(
    code: str, message: str, status: int, extra: Mapping[str, Any] | None = None
) -> Response:
    """A rest-json error: ``x-amzn-ErrorType`` names it, the JSON body has the shape's members."""
    headers = {**_request_id_headers(), "x-amzn-ErrorType": code}
    return JSONResponse({"Message": message, **(extra or {})}, status, headers=headers)


def _region(request: Request) -> str:
    match = _SCOPE_REGION.search(request.headers.get("authorization", ""))
    return match.group(1) if match else "us-east-1"


def pre_stream_error(scenario: Scenario, endpoint: str, region: str) -> Response:
    """The error SageMaker returns instead of a response (``scenario.error_before_stream``)."""
    kind = scenario.error_before_stream
    if kind is None:
        raise ValueError("the scenario has no pre-stream error")
    status = scenario.error_status or ERROR_STATUS[kind]
    if kind != "ModelError":
        return error_response(kind, scenario.error_message or _DEFAULT_ERROR_MESSAGE[kind], status)
    original = scenario.model_error_status
    side = "client" if original < 500 else "server"
    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    message = scenario.error_message or (
        f'Received {side} error ({original}) from primary with message "'
        f'{scenario.model_error_message}". See https://{region}.console.aws.amazon.com/'
        f"cloudwatch/home?region={region}#logEventViewer:group={group} in account "
        f"{ACCOUNT_ID} for more information."
    )
    extra = {
        "OriginalStatusCode": original,
        "OriginalMessage": scenario.model_error_message,
        "LogStreamArn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{group}",
    }
    return error_response(kind, message, status, extra)


COMPONENT_HEADER = "x-amzn-sagemaker-inference-component"
"""botocore sagemaker-runtime service model: InferenceComponentName's header."""


def no_capacity(component: str) -> Response:
    """A component with no copies. Not documented by AWS: the operation's only modeled 400 is
    ``ValidationError`` and a field report measured "HTTP 400 `has no capacity`" (see
    ``llm_gateway.upstream_errors.NO_CAPACITY``); the rest of the wording is ours."""
    message = f"Inference Component {component} has no capacity to process this request."
    return error_response("ValidationError", message, 400)


def endpoint_not_found(endpoint: str) -> Response:
    """SageMaker's answer for an endpoint that does not exist."""
    message = f"Endpoint {endpoint} of account {ACCOUNT_ID} not found."
    return error_response("ValidationError", message, 400)


def _emulator(request: Request) -> Emulator:
    emulator = request.app.state.emulator
    if not isinstance(emulator, Emulator):
        raise TypeError("app.state.emulator is not an Emulator")
    return emulator


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _receive(
    request: Request, operation: Literal["InvokeEndpoint", "InvokeEndpointWithResponseStream"]
) -> tuple[Emulator, str, Any]:
    emulator = _emulator(request)
    endpoint = request.path_params["name"]
    raw = await request.body()
    body = _parse_json(raw)
    emulator.record(
        RecordedRequest(
            endpoint=endpoint,
            operation=operation,
            path=request.url.path,
            headers=dict(request.headers.items()),
            body=body,
            raw_body=raw.decode("utf-8", errors="replace"),
        )
    )
    return emulator, endpoint, body


def _answerable(request: Request, emulator: Emulator, endpoint: str) -> Scenario | Response:
    """The endpoint's (or the invoked component's) scenario, or the error response SageMaker
    gives before any output."""
    component = request.headers.get(COMPONENT_HEADER)
    scenario = emulator.scenario_for(component or endpoint)
    if scenario is None:
        return endpoint_not_found(endpoint)
    if component and scenario.copies == 0:
        return no_capacity(component)
    if scenario.error_before_stream is not None:
        return pre_stream_error(scenario, endpoint, _region(request))
    return scenario


async def invoke_stream(request: Request) -> Response:
    """``InvokeEndpointWithResponseStream``."""
    emulator, endpoint, body = await _receive(request, "InvokeEndpointWithResponseStream")
    scenario = _answerable(request, emulator, endpoint)
    if isinstance(scenario, Response):
        return scenario
    headers = {
        **_request_id_headers(),
        "X-Amzn-SageMaker-Content-Type": scenario.stream_content_type,
        "x-Amzn-Invoked-Production-Variant": VARIANT,
    }
    frames = emulator.frames(scenario, body if isinstance(body, Mapping) else None)
    return StreamingResponse(frames, headers=headers, media_type=EVENTSTREAM_CONTENT_TYPE)


async def invoke(request: Request) -> Response:
    """``InvokeEndpoint`` (buffered)."""
    emulator, endpoint, body = await _receive(request, "InvokeEndpoint")
    scenario = _answerable(request, emulator, endpoint)
    if isinstance(scenario, Response):
        return scenario
    content = render_body(scenario, body if isinstance(body, Mapping) else None)
    headers = {**_request_id_headers(), "x-Amzn-Invoked-Production-Variant": VARIANT}
    return Response(content, headers=headers, media_type="application/json")


async def list_requests(request: Request) -> Response:
    """The invocation log as JSON."""
    return JSONResponse([r.model_dump(mode="json") for r in _emulator(request).requests])


async def clear_requests(request: Request) -> Response:
    """Empty the invocation log."""
    _emulator(request).clear_requests()
    return Response(status_code=204)


def _barrier_state(emulator: Emulator, name: str) -> Response:
    barriers = emulator.barriers
    return JSONResponse(
        {"name": name, "released": barriers.is_released(name), "waiting": barriers.waiting(name)}
    )


async def release_barrier(request: Request) -> Response:
    """Release a barrier (before or after a stream reaches it)."""
    emulator, name = _emulator(request), request.path_params["name"]
    emulator.barriers.release(name)
    return _barrier_state(emulator, name)


async def rearm_barrier(request: Request) -> Response:
    """Close a released barrier again."""
    emulator, name = _emulator(request), request.path_params["name"]
    emulator.barriers.rearm(name)
    return _barrier_state(emulator, name)


async def barrier_state(request: Request) -> Response:
    """``{"released": bool, "waiting": n}`` for one barrier."""
    return _barrier_state(_emulator(request), request.path_params["name"])


async def list_scenarios(request: Request) -> Response:
    """Every configured scenario (and the default, if any)."""
    emulator = _emulator(request)
    default = emulator.default.model_dump(mode="json") if emulator.default else None
    scenarios = {k: v.model_dump(mode="json") for k, v in emulator.scenarios.items()}
    return JSONResponse({"scenarios": scenarios, "default": default})


async def put_scenario(request: Request) -> Response:
    """Set one endpoint's scenario from a Scenario JSON body (422 if it is invalid)."""
    emulator, name = _emulator(request), request.path_params["name"]
    try:
        scenario = Scenario.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": json.loads(exc.json())}, 422)
    emulator.set_scenario(name, scenario)
    return JSONResponse(scenario.model_dump(mode="json"))


def create_emulator(
    scenarios: Mapping[str, Scenario] | None = None, default: Scenario | None = None
) -> Starlette:
    """The emulator app; its state is ``app.state.emulator`` (an :class:`Emulator`)."""
    routes = [
        Route("/endpoints/{name}/invocations-response-stream", invoke_stream, methods=["POST"]),
        Route("/endpoints/{name}/invocations", invoke, methods=["POST"]),
        Route("/_emulator/requests", list_requests, methods=["GET"]),
        Route("/_emulator/requests", clear_requests, methods=["DELETE"]),
        Route("/_emulator/barriers/{name}", release_barrier, methods=["POST"]),
        Route("/_emulator/barriers/{name}", rearm_barrier, methods=["DELETE"]),
        Route("/_emulator/barriers/{name}", barrier_state, methods=["GET"]),
        Route("/_emulator/scenarios", list_scenarios, methods=["GET"]),
        Route("/_emulator/scenarios/{name}", put_scenario, methods=["PUT"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = Emulator(scenarios, default)
    return app


_ScenarioFile = TypeAdapter(dict[str, Scenario])


def load_scenarios(path: Path) -> tuple[dict[str, Scenario], Scenario | None]:
    """Read ``{endpoint: Scenario, "default"?: Scenario}`` from a YAML or JSON file."""
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    scenarios = _ScenarioFile.validate_python(raw or {})
    default = scenarios.pop("default", None)
    return scenarios, default


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: serve the emulator with uvicorn."""
    parser = argparse.ArgumentParser(
        prog="python -m local.emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--scenarios", type=Path, help="YAML/JSON: endpoint name -> scenario")
    args = parser.parse_args(argv)
    scenarios, default = load_scenarios(args.scenarios) if args.scenarios else ({}, Scenario())
    uvicorn.run(
        create_emulator(scenarios, default), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
