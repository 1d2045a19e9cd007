"""Per-request metrics (CloudWatch embedded metric format, Powertools Metrics) and one
structured log line (Powertools Logger, JSON) — never any prompt or completion text.

SageMaker publishes no time-to-first-byte metric, so the gateway measures it: from the request
reaching the app to the first SSE chunk written (what the client sees, minus the network and
API Gateway), and from invoking the serving backend to its first token (upstream).

Metric contract (the dashboard is built against exactly this):
namespace ``POWERTOOLS_METRICS_NAMESPACE`` (default ``LlmGateway``); dimension sets
``{service, route}`` and ``{service, route, backend}`` for the request metrics, and
``{service, route, kind}`` for ``Errors``; on routes with a guardrail, ``GuardrailActions``
with ``{service, route, action}`` (one per request: what the guardrail did to it); on caching
routes, ``CacheHits`` and ``CacheMisses`` with ``{service, route}`` (cacheable requests only).
No consumer dimension: it is unbounded. A cache hit did no model work: it publishes no token
metrics (its log line has the counts it was charged).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from llm_gateway.contract import (
    DEFAULT_SERVICE,
    DIMENSION_ACTION,
    DIMENSION_BACKEND,
    DIMENSION_KIND,
    DIMENSION_ROUTE,
    DIMENSION_SERVICE,
    METRIC_NAMESPACE,
    METRIC_NAMESPACE_ENV,
    SERVICE_NAME_ENV,
    GuardrailAction,
    Metric,
)

logger = Logger(service=os.environ.get(SERVICE_NAME_ENV, DEFAULT_SERVICE))

# GatewayError codes that are the client's own doing, folded into a few bounded kinds.
_CLIENT_KINDS = {400: "invalid_request", 401: "unauthorized", 404: "invalid_request",
                 405: "invalid_request", 413: "invalid_request"}  # fmt: skip


# When one request meets its guardrail more than once, the most telling action is reported.
_GUARDRAIL_PRECEDENCE = (
    GuardrailAction.PASSED,
    GuardrailAction.UNAVAILABLE_PASSED,
    GuardrailAction.UNAVAILABLE_BLOCKED,
    GuardrailAction.OUTPUT_BLOCKED,
    GuardrailAction.INPUT_BLOCKED,
)


def error_kind(status: int, code: str | None) -> str:
    """A bounded error kind for the ``Errors`` metric's ``kind`` dimension."""
    if code == "content_filter":
        return "content_filter"
    if status == 429:
        return "quota_exceeded"
    if code == "model_rejected_request":
        return "model_rejected"
    if status in _CLIENT_KINDS:
        return _CLIENT_KINDS[status]
    return code or "internal"


@dataclass
class RequestTelemetry:
    """What one request did, filled in as it goes, emitted once at its end."""

    request_id: str
    route: str = ""
    stream: bool = False
    consumer: str | None = None
    backend: str | None = None
    attempts: int = 0
    fallbacks: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_byte_at: float | None = None
    upstream_ttfb_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    status: int = 200
    quota_rejected: bool = False
    cached_tokens: int | None = None
    """Prompt tokens the backend served from its prefix cache (when it reports them)."""
    reasoning_tokens: int | None = None
    """Completion tokens spent reasoning (when the backend reports them)."""
    guardrail: GuardrailAction | None = None
    cache: Literal["hit", "miss"] | None = None
    """Set for cacheable requests on caching routes."""
    no_capacity: int = 0
    """Attempts that met an inference component without copies."""
    _emitted: bool = False

    def note_guardrail(self, action: GuardrailAction) -> None:
        """Record what the guardrail did (the most telling action wins)."""
        current = self.guardrail
        rank = _GUARDRAIL_PRECEDENCE.index
        if current is None or rank(action) > rank(current):
            self.guardrail = action

    def note_no_capacity(self, _backend: object = None) -> None:
        self.no_capacity += 1

    def first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()

    def fail(self, status: int, code: str | None) -> None:
        self.status = status
        self.error = error_kind(status, code)
        self.quota_rejected = status == 429

    def emit(self) -> None:
        """Write the metrics and the log line (once; later calls do nothing)."""
        if self._emitted:
            return
        self._emitted = True
        ended = time.perf_counter()
        if self.route:
            self._metrics(ended)
        logger.info("request", extra=self._log_fields(ended))

    def _log_fields(self, ended: float) -> dict[str, Any]:
        ttfb = self.first_byte_at - self.started if self.first_byte_at else None
        return {
            "request_id": self.request_id,
            "consumer": self.consumer,
            "route": self.route or None,
            "backend": self.backend,
            "stream": self.stream,
            "attempts": self.attempts,
            "outcome": "ok" if self.error is None else "error",
            "status": self.status,
            "error_kind": self.error,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "guardrail": self.guardrail,
            "cache": self.cache,
            "no_capacity": self.no_capacity or None,
            "ttfb_ms": round(ttfb * 1000, 3) if ttfb is not None else None,
            "upstream_ttfb_ms": round(self.upstream_ttfb_s * 1000, 3)
            if self.upstream_ttfb_s is not None
            else None,
            "duration_ms": round((ended - self.started) * 1000, 3),
        }

    def _metrics(self, ended: float) -> None:
        namespace = os.environ.get(METRIC_NAMESPACE_ENV, METRIC_NAMESPACE)
        service = os.environ.get(SERVICE_NAME_ENV, DEFAULT_SERVICE)
        requests = EphemeralMetrics(namespace=namespace, service=service)
        requests.add_dimension(DIMENSION_ROUTE, self.route)
        if self.backend is not None:
            requests.add_dimensions(
                **{
                    DIMENSION_SERVICE: service,
                    DIMENSION_ROUTE: self.route,
                    DIMENSION_BACKEND: self.backend,
                }
            )
        requests.add_metric(Metric.REQUESTS, MetricUnit.Count, 1)
        requests.add_metric(Metric.DURATION, MetricUnit.Milliseconds, (ended - self.started) * 1000)
        requests.add_metric(Metric.FALLBACKS, MetricUnit.Count, self.fallbacks)
        requests.add_metric(Metric.QUOTA_REJECTIONS, MetricUnit.Count, int(self.quota_rejected))
        if self.stream and self.first_byte_at is not None:
            ttfb = (self.first_byte_at - self.started) * 1000
            requests.add_metric(Metric.TIME_TO_FIRST_BYTE, MetricUnit.Milliseconds, ttfb)
        if self.upstream_ttfb_s is not None:
            upstream = self.upstream_ttfb_s * 1000
            requests.add_metric(
                Metric.UPSTREAM_TIME_TO_FIRST_BYTE, MetricUnit.Milliseconds, upstream
            )
        if self.input_tokens is not None and self.cache != "hit":
            requests.add_metric(Metric.INPUT_TOKENS, MetricUnit.Count, self.input_tokens)
        if self.output_tokens is not None and self.cache != "hit":
            requests.add_metric(Metric.OUTPUT_TOKENS, MetricUnit.Count, self.output_tokens)
            if self.first_byte_at is not None and ended > self.first_byte_at:
                rate = self.output_tokens / (ended - self.first_byte_at)
                requests.add_metric(
                    Metric.OUTPUT_TOKENS_PER_SECOND, MetricUnit.CountPerSecond, rate
                )
        requests.flush_metrics()
        if self.error is not None:
            self._counts({Metric.ERRORS: 1}, {DIMENSION_KIND: self.error})
        if self.cache is not None:
            hit = int(self.cache == "hit")
            self._counts({Metric.CACHE_HITS: hit, Metric.CACHE_MISSES: 1 - hit}, {})
        if self.guardrail is not None:
            self._counts({Metric.GUARDRAIL_ACTIONS: 1}, {DIMENSION_ACTION: self.guardrail})
        if self.no_capacity:
            self._counts({Metric.NO_CAPACITY: self.no_capacity}, {})

    def _counts(self, counts: dict[Metric, int], dimensions: dict[str, str]) -> None:
        """Counts with ``{service, route}`` and ``dimensions`` (one EMF record)."""
        record = EphemeralMetrics(
            namespace=os.environ.get(METRIC_NAMESPACE_ENV, METRIC_NAMESPACE),
            service=os.environ.get(SERVICE_NAME_ENV, DEFAULT_SERVICE),
        )
        record.add_dimension(DIMENSION_ROUTE, self.route)
        for name, dimension in dimensions.items():
            record.add_dimension(name, dimension)
        for metric, value in counts.items():
            record.add_metric(metric, MetricUnit.Count, value)
        record.flush_metrics()
