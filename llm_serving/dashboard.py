"""InferenceDashboard: one CloudWatch dashboard and the alarms of a streaming gateway and its
SageMaker endpoints, notifying one KMS-encrypted SNS topic.

The gateway's own metrics follow its runtime's contract (``lambda/llm_gateway/telemetry.py``):
namespace :data:`~llm_gateway.contract.METRIC_NAMESPACE`, the ``service`` dimension set to
:attr:`StreamingGateway.service_name` (the gateway stack's name), and the dimension sets
``{service, route}`` and ``{service, route, backend}`` for the request metrics and
``{service, route, kind}`` for ``Errors``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from llm_gateway.contract import REQUEST_METRICS, ROUTE_ONLY_METRICS, Metric
from llm_serving.config.gateway import ObservabilityConfig
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway import StreamingGateway
from llm_serving.gateway_routes import GatewayRoute
from llm_serving.stage import Stage, StagePolicy

GRAPH_PERIOD = Duration.minutes(1)
"""Period of the dashboard's graphs."""
ALARM_PERIOD = Duration.minutes(5)
"""Period of every alarm's statistic."""
SUSTAINED_PERIODS = 3
"""Latency, rate and GPU memory alarms fire when all of this many periods breach (15 min)."""
PERCENTILES = ("p50", "p90", "p99")
ALARM_NAME_LIMIT = 255

ERRORS_METRIC = Metric.ERRORS

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


def _construct_id(prefix: str, name: str) -> str:
    """A construct id for ``name`` (route aliases may contain ``/``, which ids may not;
    aliases never contain ``|``, so the mapping stays one-to-one)."""
    return f"{prefix}[{name.replace('/', '|')}]"


def console_url(region: str, dashboard_name: str) -> str | None:
    """The CloudWatch console URL of a dashboard, for the commercial and China partitions."""
    if region.startswith("cn-"):
        host = f"{region}.console.amazonaws.cn"
    elif region.startswith(("us-gov-", "us-iso", "eu-isoe-", "eusc-")):
        return None
    else:
        host = f"{region}.console.aws.amazon.com"
    return f"https://{host}/cloudwatch/home?region={region}#dashboards/dashboard/{dashboard_name}"


class InferenceDashboard(Construct):
    """A CloudWatch dashboard and alarms for a :class:`StreamingGateway` and the
    :class:`LlmEndpoint` s behind it, with one SNS topic for every alarm.

    Dashboard (unless ``config.dashboard`` is false), top to bottom: how TTFB is measured and
    the alarms' states; per route (``gateway.routes``), gateway TTFB p50/p90/p99 beside
    upstream TTFB p50/p90/p99 and output tokens per second, then requests / fallbacks / quota
    rejections, errors by kind (a CloudWatch ``SEARCH`` over the ``kind`` dimension, so new
    kinds appear unlisted) and tokens, plus per-backend comparisons when a route has more than
    one backend; per endpoint, GPU utilization and GPU memory normalized to 0–100 % (divided
    by the instance's GPU count), CPU (0–100 × vCPUs), memory and disk, invocations with
    4xx/5xx rates, model and overhead latency in milliseconds (published in µs) and
    concurrent requests against the autoscaling target; API Gateway (count, 4XX, 5XX, latency,
    integration latency) and the function (duration, errors, throttles, concurrent
    executions). The dashboard is named ``<stack name>-<region>`` (dashboards are global to
    an account, so stages and regions never collide).

    Alarms (thresholds from ``config``, 5-minute statistics, missing data not breaching, each
    notifying :attr:`topic`): gateway TTFB p99 per route; Fallbacks / Requests per route;
    Invocation5XXErrors average per endpoint; normalized GPU memory per endpoint (which must be
    above every endpoint's ``gpu_memory_utilization``: the engines preallocate that share);
    function errors (a sum over one period). The latency, rate and memory alarms need
    :data:`SUSTAINED_PERIODS` breaching periods in a row. Alarm names start with the stack's
    name, which the topic policy relies on.

    :attr:`topic` is encrypted with its own customer-managed key (rotated) whose policy lets
    CloudWatch use it (alarms cannot publish to a topic under the AWS-managed ``aws/sns``
    key). Its policy denies publishing without TLS and lets CloudWatch publish for this
    account's alarms named after this stack (a topic policy replaces SNS's default one, which
    is what admits same-account alarms otherwise). ``config.alarm_email``, when set, is
    subscribed.

    Only the endpoints' deterministic names are used, so endpoints in other stacks create no
    cross-stack references.

    Exposes ``dashboard`` (None when disabled), ``dashboard_name``, ``dashboard_url``,
    ``topic``, ``key``, ``alarms`` (name → Alarm: ``ttfb-p99:<route>``,
    ``fallback-rate:<route>``, ``endpoint-5xx:<model>``, ``gpu-memory:<model>``,
    ``lambda-errors``), ``service_name`` and ``namespace``, and the gateway metric helpers
    :meth:`metric_route`, :meth:`metric_backend`, :meth:`errors_by_kind` and
    :meth:`metric_fallback_rate`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        gateway: StreamingGateway,
        endpoints: Sequence[LlmEndpoint],
        config: ObservabilityConfig,
        stage: Stage,
    ) -> None:
        super().__init__(scope, construct_id)
        self._policy = StagePolicy.for_stage(stage)
        self.gateway = gateway
        self.config = config
        self.namespace = gateway.metric_namespace
        self.service_name = gateway.service_name
        self.endpoints = _unique(endpoints)
        self._check_gpu_memory_threshold()
        stack = Stack.of(self)
        self._alarm_prefix = stack.stack_name

        self.key, self.topic = self._topic()
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self._names: dict[str, str] = {}
        self._route_alarms()
        self._endpoint_alarms()
        self._function_alarm()

        self.dashboard_name = f"{stack.stack_name}-{stack.region}"
        self.dashboard_url = console_url(stack.region, self.dashboard_name)
        self.dashboard: cloudwatch.Dashboard | None = (
            self._dashboard() if config.dashboard else None
        )

    # --- Metrics ---------------------------------------------------------------------------

    def metric_route(
        self,
        metric_name: str,
        route: str,
        *,
        statistic: str = "Sum",
        period: Duration | None = None,
        label: str | None = None,
    ) -> cloudwatch.Metric:
        """A gateway metric of one route (dimensions ``{service, route}``)."""
        if metric_name not in (*REQUEST_METRICS, *ROUTE_ONLY_METRICS):
            raise ValueError(f"{metric_name!r} is not a route-level gateway metric")
        return self._gateway_metric(metric_name, {"route": route}, statistic, period, label)

    def metric_backend(
        self,
        metric_name: str,
        route: str,
        backend: str,
        *,
        statistic: str = "Sum",
        period: Duration | None = None,
        label: str | None = None,
    ) -> cloudwatch.Metric:
        """A gateway metric of one backend (model config name) of a route
        (dimensions ``{service, route, backend}``)."""
        if metric_name not in REQUEST_METRICS:
            raise ValueError(f"{metric_name!r} is not a backend-level gateway metric")
        dimensions = {"route": route, "backend": backend}
        return self._gateway_metric(metric_name, dimensions, statistic, period, label)

    def errors_by_kind(
        self, route: str, *, period: Duration | None = None
    ) -> cloudwatch.SearchExpression:
        """One time series per error ``kind`` of ``route`` (a SEARCH: kinds are not listed)."""
        seconds = int((period or GRAPH_PERIOD).to_seconds())
        schema = f"{{{self.namespace},kind,route,service}}"
        terms = f'MetricName="{ERRORS_METRIC}" service="{self.service_name}" route="{route}"'
        return cloudwatch.SearchExpression(
            expression=f"SEARCH('{schema} {terms}', 'Sum', {seconds})",
            label="${PROP('Dim.kind')}",
            period=period or GRAPH_PERIOD,
        )

    def metric_fallback_rate(
        self, route: str, *, period: Duration | None = None
    ) -> cloudwatch.MathExpression:
        """Fallbacks per request of ``route`` (failed attempts before the serving one)."""
        period = period or ALARM_PERIOD
        return cloudwatch.MathExpression(
            expression="FILL(fallbacks, 0) / requests",
            using_metrics={
                "fallbacks": self.metric_route(Metric.FALLBACKS, route, period=period),
                "requests": self.metric_route(Metric.REQUESTS, route, period=period),
            },
            label="Fallbacks per request",
            period=period,
        )

    def _gateway_metric(
        self,
        metric_name: str,
        dimensions: dict[str, str],
        statistic: str,
        period: Duration | None,
        label: str | None,
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self.namespace,
            metric_name=metric_name,
            dimensions_map={"service": self.service_name, **dimensions},
            statistic=statistic,
            period=period or GRAPH_PERIOD,
            label=label,
        )

    # --- Topic -----------------------------------------------------------------------------

    def _topic(self) -> tuple[kms.Key, sns.Topic]:
        stack = Stack.of(self)
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"Encrypts the alarm topic of {stack.stack_name}",
            enable_key_rotation=True,
            # Nothing stays encrypted under it (SNS keeps no messages after delivery), so it is
            # scheduled for deletion with the stack in every stage, after the stage's window.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=self._policy.key_pending_window,
        )
        # AWS's documented statement for CloudWatch alarms publishing to a topic encrypted
        # with a customer-managed key. The key encrypts this topic only, so this lets
        # CloudWatch encrypt alarm notifications and nothing else.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublishToTheTopic",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"LLM serving alarms ({stack.stack_name})"[:100],
            master_key=key,
            enforce_ssl=True,
        )
        # A topic policy replaces SNS's default one, which is what lets same-account alarms
        # publish; so allow this account's CloudWatch alarms named after this stack.
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisStacksAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=f"{self._alarm_prefix}-*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                },
            )
        )
        if self.config.alarm_email is not None:
            topic.add_subscription(subscriptions.EmailSubscription(self.config.alarm_email))
        return key, topic

    # --- Alarms ----------------------------------------------------------------------------

    def _alarm(
        self,
        key: str,
        construct_id: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        periods: int = SUSTAINED_PERIODS,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=self._alarm_name(key),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
        self.alarms[key] = alarm
        return alarm

    def _alarm_name(self, key: str) -> str:
        """``<stack name>-<key>`` (the topic policy matches the prefix), within CloudWatch's
        255 characters: a long one keeps its start and gets a hash of the whole."""
        name = f"{self._alarm_prefix}-{key.replace(':', '-')}"
        if len(name) > ALARM_NAME_LIMIT:
            digest = hashlib.sha256(name.encode()).hexdigest()[:12]
            name = f"{name[: ALARM_NAME_LIMIT - 13]}-{digest}"
        taken = [k for k, other in self._names.items() if other == name]
        if taken:
            raise ValueError(
                f"alarms {taken[0]!r} and {key!r} would both be named {name!r}; fix: rename "
                "one of the routes (':' and '-' are the same in alarm names)"
            )
        self._names[key] = name
        return name

    def _route_alarms(self) -> None:
        config = self.config
        minutes = int(ALARM_PERIOD.to_minutes()) * SUSTAINED_PERIODS
        for alias in self.gateway.routes:
            self._alarm(
                f"ttfb-p99:{alias}",
                _construct_id("TtfbP99Alarm", alias),
                metric=self.metric_route(
                    Metric.TIME_TO_FIRST_BYTE, alias, statistic="p99", period=ALARM_PERIOD
                ),
                threshold=config.ttfb_p99_ms,
                description=(
                    f"Route {alias}: gateway time to first byte p99 above "
                    f"{config.ttfb_p99_ms:g} ms for {minutes} minutes (streamed requests). "
                    "Compare upstream TTFB and fallbacks on the dashboard."
                ),
            )
            self._alarm(
                f"fallback-rate:{alias}",
                _construct_id("FallbackRateAlarm", alias),
                metric=self.metric_fallback_rate(alias),
                threshold=config.fallback_rate,
                description=(
                    f"Route {alias}: more than {config.fallback_rate:g} failed attempts per "
                    f"request for {minutes} minutes; a backend is failing or too slow to its "
                    "first token."
                ),
            )

    def _endpoint_alarms(self) -> None:
        config = self.config
        minutes = int(ALARM_PERIOD.to_minutes()) * SUSTAINED_PERIODS
        for endpoint in self.endpoints:
            name = endpoint.config.name
            self._alarm(
                f"endpoint-5xx:{name}",
                f"Endpoint5xxAlarm[{name}]",
                metric=endpoint.metric_5xx_rate(period=ALARM_PERIOD),
                threshold=config.endpoint_5xx_rate,
                description=(
                    f"{name} ({endpoint.endpoint_name}): 5xx error rate above "
                    f"{config.endpoint_5xx_rate:.1%} for {minutes} minutes."
                ),
            )
            self._alarm(
                f"gpu-memory:{name}",
                f"GpuMemoryAlarm[{name}]",
                metric=endpoint.metric_gpu_memory_utilization(period=ALARM_PERIOD),
                threshold=config.gpu_memory_percent,
                description=(
                    f"{name} ({endpoint.endpoint_name}): GPU memory above "
                    f"{config.gpu_memory_percent:g} % of its {endpoint.gpus.count} GPU(s) for "
                    f"{minutes} minutes, beyond the engine's preallocated "
                    f"{endpoint.config.container.gpu_memory_utilization:.0%}."
                ),
            )

    def _function_alarm(self) -> None:
        config = self.config
        self._alarm(
            "lambda-errors",
            "FunctionErrorsAlarm",
            metric=self.gateway.function.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
            threshold=config.lambda_errors,
            periods=1,
            description=(
                f"Gateway function: more than {config.lambda_errors} errors in "
                f"{int(ALARM_PERIOD.to_minutes())} minutes (crashes, timeouts, out of memory; "
                "requests it answers with an error are counted in the gateway's Errors)."
            ),
        )

    def _check_gpu_memory_threshold(self) -> None:
        threshold = self.config.gpu_memory_percent
        for endpoint in self.endpoints:
            share = endpoint.config.container.gpu_memory_utilization
            if threshold <= share * 100:
                raise ValueError(
                    f"observability.gpu_memory_percent ({threshold:g}) is not above model "
                    f"{endpoint.config.name!r}'s container.gpu_memory_utilization ({share:g}): "
                    "the engine preallocates that share of every GPU, so the alarm would "
                    f"always fire; fix: raise gpu_memory_percent above {share * 100:g} or "
                    "lower gpu_memory_utilization"
                )

    # --- Dashboard -------------------------------------------------------------------------

    def _dashboard(self) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self.dashboard_name,
            default_interval=Duration.hours(3),
        )
        dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=(
                    f"# LLM serving: {self.service_name}\n"
                    f"Gateway metrics: namespace `{self.namespace}`, "
                    f"`service` = `{self.service_name}`.\n\n{_TTFB_TEXT}"
                ),
                width=_WIDTH,
                height=4,
            )
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms",
                alarms=list(self.alarms.values()),
                width=_WIDTH,
                height=2 + (len(self.alarms) + 3) // 4,
            )
        )
        for alias, route in self.gateway.routes.items():
            for row in self._route_rows(alias, route):
                dashboard.add_widgets(*row)
        for endpoint in self.endpoints:
            for row in self._endpoint_rows(endpoint):
                dashboard.add_widgets(*row)
        for row in self._front_door_rows():
            dashboard.add_widgets(*row)
        return dashboard

    def _route_rows(self, alias: str, route: GatewayRoute) -> list[list[cloudwatch.IWidget]]:
        backends = [b.endpoint.config.name for b in route.backends]
        described = ", ".join(
            f"`{b.endpoint.config.name}`"
            + (f" (weight {b.weight})" if b.weight is not None else "")
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
                self.metric_route(name, alias, statistic=stat, label=f"{prefix} {stat}")
                for stat in PERCENTILES
            ]

        ttfb = self._graph(
            f"{alias}: gateway TTFB (ms)",
            percentiles(Metric.TIME_TO_FIRST_BYTE, "TTFB"),
            annotation=(self.config.ttfb_p99_ms, "p99 alarm"),
        )
        upstream = self._graph(
            f"{alias}: upstream TTFB (ms)",
            percentiles(Metric.UPSTREAM_TIME_TO_FIRST_BYTE, "Upstream TTFB"),
        )
        throughput = self._graph(
            f"{alias}: output tokens per second (per request)",
            [
                self.metric_route(
                    Metric.OUTPUT_TOKENS_PER_SECOND, alias, statistic=stat, label=stat
                )
                for stat in ("p10", "p50", "p90")
            ],
        )
        requests = self._graph(
            f"{alias}: requests, fallbacks, quota rejections",
            [
                self.metric_route(Metric.REQUESTS, alias, label="Requests"),
                self.metric_route(Metric.FALLBACKS, alias, label="Fallbacks (failed attempts)"),
                self.metric_route(Metric.QUOTA_REJECTIONS, alias, label="Quota rejections"),
            ],
        )
        errors = self._graph(f"{alias}: errors by kind", [self.errors_by_kind(alias)])
        tokens = self._graph(
            f"{alias}: tokens",
            [
                self.metric_route(Metric.INPUT_TOKENS, alias, label="Input tokens"),
                self.metric_route(Metric.OUTPUT_TOKENS, alias, label="Output tokens"),
            ],
        )
        rows: list[list[cloudwatch.IWidget]] = [
            [header],
            [ttfb, upstream, throughput],
            [requests, errors, tokens],
        ]
        if len(backends) > 1:

            def by_backend(name: str, statistic: str) -> list[cloudwatch.IMetric]:
                return [
                    self.metric_backend(name, alias, backend, statistic=statistic, label=backend)
                    for backend in backends
                ]

            rows.append(
                [
                    self._graph(
                        f"{alias}: requests by backend", by_backend(Metric.REQUESTS, "Sum")
                    ),
                    self._graph(
                        f"{alias}: upstream TTFB p90 by backend (ms)",
                        by_backend(Metric.UPSTREAM_TIME_TO_FIRST_BYTE, "p90"),
                    ),
                    self._graph(
                        f"{alias}: output tokens per second p50 by backend",
                        by_backend(Metric.OUTPUT_TOKENS_PER_SECOND, "p50"),
                    ),
                ]
            )
        return rows

    def _endpoint_rows(self, endpoint: LlmEndpoint) -> list[list[cloudwatch.IWidget]]:
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
        gpu = self._graph(
            f"{name}: GPU utilization (% of all GPUs)",
            [endpoint.metric_gpu_utilization()],
            left_y_axis=percent_axis,
            width=width,
        )
        gpu_memory = self._graph(
            f"{name}: GPU memory (% of all GPUs)",
            [endpoint.metric_gpu_memory_utilization()],
            left_y_axis=percent_axis,
            annotation=(self.config.gpu_memory_percent, "alarm"),
            width=width,
        )
        host = self._graph(
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
                cloudwatch.HorizontalAnnotation(
                    value=self.config.endpoint_5xx_rate, label="5xx alarm"
                )
            ],
            width=width,
            height=_HEIGHT,
        )
        latency = self._graph(
            f"{name}: model latency (ms)",
            [
                *(endpoint.metric_latency_ms(statistic=stat) for stat in PERCENTILES),
                endpoint.metric_latency_ms("OverheadLatency", statistic="p90"),
            ],
            width=_WIDTH // 2,
        )
        concurrency = self._graph(
            f"{name}: concurrent requests per model (max)",
            [endpoint.metric_concurrent_requests().with_(label="Concurrent requests")],
            annotation=(
                endpoint.config.scaling.target_concurrent_requests_per_model,
                "autoscaling target",
            ),
            width=_WIDTH // 2,
        )
        return [[header], [gpu, gpu_memory, host, invocations], [latency, concurrency]]

    def _front_door_rows(self) -> list[list[cloudwatch.IWidget]]:
        api = self.gateway.api
        function = self.gateway.function
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
        api_requests = self._graph(
            "API requests", [api.metric_count(statistic="Sum", label="Requests")], width=width
        )
        api_errors = self._graph(
            "API 4XX and 5XX",
            [api.metric_client_error(label="4XX"), api.metric_server_error(label="5XX")],
            width=width,
        )
        api_latency = self._graph(
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
        duration = self._graph(
            "Function duration (ms)",
            [
                function.metric_duration(statistic=stat, label=stat)
                for stat in ("p50", "p99", "Maximum")
            ],
            width=width,
        )
        errors = self._graph(
            "Function errors and throttles",
            [function.metric_errors(label="Errors"), function.metric_throttles(label="Throttles")],
            annotation=(self.config.lambda_errors, "errors alarm (per 5 min)"),
            width=width,
        )
        concurrency = self._graph(
            "Function concurrent executions",
            [function.metric("ConcurrentExecutions", statistic="Maximum", label="Maximum")],
            width=width,
        )
        invocations = self._graph(
            "Function invocations",
            [function.metric_invocations(label="Invocations")],
            width=width,
        )
        return [
            [header],
            [api_requests, api_errors, api_latency],
            [duration, errors, concurrency, invocations],
        ]

    @staticmethod
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


def _unique(endpoints: Sequence[LlmEndpoint]) -> list[LlmEndpoint]:
    unique: dict[str, LlmEndpoint] = {}
    for endpoint in endpoints:
        unique.setdefault(endpoint.node.path, endpoint)
    names = [e.config.name for e in unique.values()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"InferenceDashboard: endpoints of the same model config {repeated}; pass each "
            "model's endpoint once (alarms and widgets are named after the model config)"
        )
    return list(unique.values())
