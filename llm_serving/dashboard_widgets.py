"""The layout of :class:`~llm_serving.dashboard.InferenceDashboard`'s CloudWatch dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from llm_gateway.contract import Metric
from llm_serving.component import LlmInferenceComponent
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway_routes import GatewayRoute

if TYPE_CHECKING:
    from llm_serving.dashboard import InferenceDashboard

PERCENTILES = ("p50", "p90", "p99")
_WIDTH = 24  # CloudWatch's dashboard grid
_HEIGHT = 6

_TTFB_TEXT = (
    "**Gateway TTFB** (`TimeToFirstByte`, streamed requests only) is measured by the gateway "
    "function from the request reaching it to the first SSE chunk it writes: what the client "
    "sees, minus the network and API Gateway. **Upstream TTFB** "
    "(`UpstreamTimeToFirstByte`) runs from invoking the serving backend to its first token; "
    "the gap between the two is the gateway's own time, including failed attempts before the "
    "serving one (`Fallbacks`). SageMaker publishes no time-to-first-byte metric. "
    "`OutputTokensPerSecond` is per request, from its first byte to its end."
)


def build_dashboard(board: InferenceDashboard) -> cloudwatch.Dashboard:
    """The dashboard (construct id ``Dashboard``): header, alarm states, one block per route,
    per endpoint, then API Gateway and the function."""
    dashboard = cloudwatch.Dashboard(
        board,
        "Dashboard",
        dashboard_name=board.dashboard_name,
        default_interval=Duration.hours(3),
    )
    dashboard.add_widgets(
        cloudwatch.TextWidget(
            markdown=(
                f"# LLM serving: {board.service_name}\n"
                f"Gateway metrics: namespace `{board.namespace}`, "
                f"`service` = `{board.service_name}`.\n\n{_TTFB_TEXT}"
            ),
            width=_WIDTH,
            height=4,
        )
    )
    dashboard.add_widgets(
        cloudwatch.AlarmStatusWidget(
            title="Alarms",
            alarms=list(board.alarms.values()),
            width=_WIDTH,
            height=2 + (len(board.alarms) + 3) // 4,
        )
    )
    for alias, route in board.gateway.routes.items():
        for row in _route_rows(board, alias, route):
            dashboard.add_widgets(*row)
    for endpoint in board.endpoints:
        for row in _endpoint_rows(board, endpoint):
            dashboard.add_widgets(*row)
    for component in board.components:
        for row in _component_rows(board, component):
            dashboard.add_widgets(*row)
    for row in _front_door_rows(board):
        dashboard.add_widgets(*row)
    return dashboard


def _component_rows(
    board: InferenceDashboard, component: LlmInferenceComponent
) -> list[list[cloudwatch.IWidget]]:
    """Copies, requests that found none (SageMaker's count and the gateway's), GPU use of the
    copies' reserved GPUs (already 0–100 %), concurrency per copy against the target."""
    name = component.config.name
    hosting = component.hosting
    header = cloudwatch.TextWidget(
        markdown=(
            f"## Inference component `{name}`\n`{component.inference_component_name}` on shared "
            f"endpoint `{component.endpoint.plan.name}` ({component.config.instance.type}), "
            f"{hosting.accelerators_per_copy} GPU(s) per copy, {hosting.copies.min}–"
            f"{hosting.copies.max} copies. Copies = copies reporting utilization (no data at 0)."
        ),
        width=_WIDTH,
        height=2,
    )
    gateway_no_capacity = [
        board.metric_route(Metric.NO_CAPACITY, alias, label=f"gateway: {alias}")
        for alias, route in board.gateway.routes.items()
        if any(b.endpoint is component for b in route.backends)
    ]
    copies = _graph("Copies", [component.metric_copies()])
    no_capacity = _graph(
        "Requests that found no copy",
        [component.metric_no_capacity(), *gateway_no_capacity],
    )
    gpu = _graph(
        "GPU of the copies (%)",
        [component.metric_gpu_utilization(), component.metric_gpu_memory_utilization()],
        left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
    )
    concurrency = _graph(
        "Concurrent requests per copy",
        [component.metric_concurrent_requests_per_copy(), component.metric_invocations()],
        annotation=(hosting.target_concurrent_requests_per_copy, "autoscaling target"),
    )
    return [[header], [copies, no_capacity, gpu], [concurrency]]


def _route_rows(
    board: InferenceDashboard, alias: str, route: GatewayRoute
) -> list[list[cloudwatch.IWidget]]:
    backends = [b.contract().name for b in route.backends]
    described = ", ".join(
        f"`{b.contract().name}`" + (f" (weight {b.weight})" if b.weight is not None else "")
        for b in route.backends
    )
    header = cloudwatch.TextWidget(
        markdown=(
            f"## Route `{alias}`\nBackends in fallback order: {described}; first-byte "
            f"deadline {route.first_byte_timeout_s:g} s, at most {route.max_attempts} "
            "attempt(s)."
        ),
        width=_WIDTH,
        height=2,
    )

    def percentiles(name: str, prefix: str) -> list[cloudwatch.IMetric]:
        return [
            board.metric_route(name, alias, statistic=stat, label=f"{prefix} {stat}")
            for stat in PERCENTILES
        ]

    ttfb = _graph(
        f"{alias}: gateway TTFB (ms)",
        percentiles(Metric.TIME_TO_FIRST_BYTE, "TTFB"),
        annotation=(board.config.ttfb_p99_ms, "p99 alarm"),
    )
    upstream = _graph(
        f"{alias}: upstream TTFB (ms)",
        percentiles(Metric.UPSTREAM_TIME_TO_FIRST_BYTE, "Upstream TTFB"),
    )
    throughput = _graph(
        f"{alias}: output tokens per second (per request)",
        [
            board.metric_route(Metric.OUTPUT_TOKENS_PER_SECOND, alias, statistic=stat, label=stat)
            for stat in ("p10", "p50", "p90")
        ],
    )
    requests = _graph(
        f"{alias}: requests, fallbacks, quota rejections",
        [
            board.metric_route(Metric.REQUESTS, alias, label="Requests"),
            board.metric_route(Metric.FALLBACKS, alias, label="Fallbacks (failed attempts)"),
            board.metric_route(Metric.QUOTA_REJECTIONS, alias, label="Quota rejections"),
        ],
    )
    errors = _graph(f"{alias}: errors by kind", [board.errors_by_kind(alias)])
    tokens = _graph(
        f"{alias}: tokens",
        [
            board.metric_route(Metric.INPUT_TOKENS, alias, label="Input tokens"),
            board.metric_route(Metric.OUTPUT_TOKENS, alias, label="Output tokens"),
        ],
    )
    rows: list[list[cloudwatch.IWidget]] = [
        [header],
        [ttfb, upstream, throughput],
        [requests, errors, tokens],
    ]
    traffic: list[cloudwatch.IWidget] = []
    if route.guardrail is not None:
        traffic.append(_graph(f"{alias}: guardrail actions", [board.guardrail_actions(alias)]))
    if route.cache is not None:
        traffic.append(
            _graph(
                f"{alias}: response cache",
                [
                    board.metric_route(Metric.CACHE_HITS, alias, label="Hits"),
                    board.metric_route(Metric.CACHE_MISSES, alias, label="Misses"),
                ],
            )
        )
    if traffic:
        rows.append(traffic)
    if len(backends) > 1:

        def by_backend(name: str, statistic: str) -> list[cloudwatch.IMetric]:
            return [
                board.metric_backend(name, alias, backend, statistic=statistic, label=backend)
                for backend in backends
            ]

        rows.append(
            [
                _graph(f"{alias}: requests by backend", by_backend(Metric.REQUESTS, "Sum")),
                _graph(
                    f"{alias}: upstream TTFB p90 by backend (ms)",
                    by_backend(Metric.UPSTREAM_TIME_TO_FIRST_BYTE, "p90"),
                ),
                _graph(
                    f"{alias}: output tokens per second p50 by backend",
                    by_backend(Metric.OUTPUT_TOKENS_PER_SECOND, "p50"),
                ),
            ]
        )
    return rows


def _endpoint_rows(
    board: InferenceDashboard, endpoint: LlmEndpoint
) -> list[list[cloudwatch.IWidget]]:
    name = endpoint.config.name
    gpus = endpoint.gpus
    header = cloudwatch.TextWidget(
        markdown=(
            f"## Endpoint `{name}`\n`{endpoint.endpoint_name}` on "
            f"{endpoint.config.instance.type} ({gpus.count} × {gpus.gpu}). GPU metrics read "
            f"0–100 × GPU count and are divided by {gpus.count} here; CPU reads 0–100 × "
            "vCPUs; latencies are published in µs and shown in ms."
        ),
        width=_WIDTH,
        height=2,
    )
    percent_axis = cloudwatch.YAxisProps(min=0, max=100, label="%", show_units=False)
    width = _WIDTH // 4
    gpu = _graph(
        f"{name}: GPU utilization (% of all GPUs)",
        [endpoint.metric_gpu_utilization()],
        left_y_axis=percent_axis,
        width=width,
    )
    gpu_memory = _graph(
        f"{name}: GPU memory (% of all GPUs)",
        [endpoint.metric_gpu_memory_utilization()],
        left_y_axis=percent_axis,
        annotation=(board.config.gpu_memory_percent, "alarm"),
        width=width,
    )
    host = _graph(
        f"{name}: CPU (0–100 × vCPUs), memory and disk (%)",
        [
            endpoint.metric_cpu_utilization(),
            endpoint.metric_memory_utilization(),
            endpoint.metric_disk_utilization(),
        ],
        width=width,
    )
    invocations = cloudwatch.GraphWidget(
        title=f"{name}: invocations and 4xx/5xx rates",
        left=[endpoint.metric_invocations().with_(label="Invocations")],
        right=[
            endpoint.metric_4xx_rate().with_(label="4xx rate"),
            endpoint.metric_5xx_rate().with_(label="5xx rate"),
        ],
        right_y_axis=cloudwatch.YAxisProps(min=0, max=1, label="rate", show_units=False),
        right_annotations=[
            cloudwatch.HorizontalAnnotation(value=board.config.endpoint_5xx_rate, label="5xx alarm")
        ],
        width=width,
        height=_HEIGHT,
    )
    latency = _graph(
        f"{name}: model latency (ms)",
        [
            *(endpoint.metric_latency_ms(statistic=stat) for stat in PERCENTILES),
            endpoint.metric_latency_ms("OverheadLatency", statistic="p90"),
        ],
        width=_WIDTH // 2,
    )
    concurrency = _graph(
        f"{name}: concurrent requests per model (max)",
        [endpoint.metric_concurrent_requests().with_(label="Concurrent requests")],
        annotation=(
            endpoint.config.scaling.target_concurrent_requests_per_model,
            "autoscaling target",
        ),
        width=_WIDTH // 2,
    )
    return [[header], [gpu, gpu_memory, host, invocations], [latency, concurrency]]


def _front_door_rows(board: InferenceDashboard) -> list[list[cloudwatch.IWidget]]:
    api = board.gateway.api
    function = board.gateway.function
    header = cloudwatch.TextWidget(
        markdown=(
            "## API Gateway and the gateway function\nAPI Gateway counts every request, "
            "including those it answers itself (missing keys, throttling, usage-plan "
            "quotas)."
        ),
        width=_WIDTH,
        height=2,
    )
    width = _WIDTH // 3
    api_requests = _graph(
        "API requests", [api.metric_count(statistic="Sum", label="Requests")], width=width
    )
    api_errors = _graph(
        "API 4XX and 5XX",
        [api.metric_client_error(label="4XX"), api.metric_server_error(label="5XX")],
        width=width,
    )
    api_latency = _graph(
        "API latency and integration latency (ms)",
        [
            *(
                api.metric_latency(statistic=stat, label=f"Latency {stat}")
                for stat in ("p50", "p99")
            ),
            *(
                api.metric_integration_latency(statistic=stat, label=f"Integration {stat}")
                for stat in ("p50", "p99")
            ),
        ],
        width=width,
    )
    width = _WIDTH // 4
    duration = _graph(
        "Function duration (ms)",
        [
            function.metric_duration(statistic=stat, label=stat)
            for stat in ("p50", "p99", "Maximum")
        ],
        width=width,
    )
    errors = _graph(
        "Function errors and throttles",
        [function.metric_errors(label="Errors"), function.metric_throttles(label="Throttles")],
        annotation=(board.config.lambda_errors, "errors alarm (per 5 min)"),
        width=width,
    )
    concurrency = _graph(
        "Function concurrent executions",
        [function.metric("ConcurrentExecutions", statistic="Maximum", label="Maximum")],
        width=width,
    )
    invocations = _graph(
        "Function invocations",
        [function.metric_invocations(label="Invocations")],
        width=width,
    )
    return [
        [header],
        [api_requests, api_errors, api_latency],
        [duration, errors, concurrency, invocations],
    ]


def _graph(
    title: str,
    metrics: Sequence[cloudwatch.IMetric],
    *,
    annotation: tuple[float, str] | None = None,
    left_y_axis: cloudwatch.YAxisProps | None = None,
    width: int = _WIDTH // 3,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=list(metrics),
        left_y_axis=left_y_axis,
        left_annotations=(
            [cloudwatch.HorizontalAnnotation(value=annotation[0], label=annotation[1])]
            if annotation is not None
            else None
        ),
        width=width,
        height=_HEIGHT,
    )
