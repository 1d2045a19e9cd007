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

from llm_gateway.contract import (
    DIMENSION_ACTION,
    DIMENSION_KIND,
    REQUEST_METRICS,
    ROUTE_ONLY_METRICS,
    Metric,
)
from llm_serving.component import LlmInferenceComponent
from llm_serving.config.gateway import ObservabilityConfig
from llm_serving.dashboard_widgets import build_dashboard
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway import StreamingGateway
from llm_serving.stage import Stage, StagePolicy

GRAPH_PERIOD = Duration.minutes(1)
"""Period of the dashboard's graphs."""
ALARM_PERIOD = Duration.minutes(5)
"""Period of every alarm's statistic."""
SUSTAINED_PERIODS = 3
"""Latency, rate and GPU memory alarms fire when all of this many periods breach (15 min)."""
ALARM_NAME_LIMIT = 255


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
        stage: Stage,
        endpoints: Sequence[LlmEndpoint | LlmInferenceComponent] | None = None,
        config: ObservabilityConfig | None = None,
    ) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id.
        :param gateway: the ``StreamingGateway`` whose routes, API and function are charted.
            Required.
        :param stage: the alarm topic key's deletion window (7 days dev, 30 prod). Required.
        :param endpoints: the ``LlmEndpoint`` s and ``LlmInferenceComponent`` s to chart
            (each model once; repeats are charted once). Default: every one the gateway
            routes to (``ExistingEndpoint`` s are not charted).
        :param config: thresholds, alarm e-mail and whether to build the dashboard
            (``ObservabilityConfig``). Default: the gateway's ``config.observability``.
        """
        super().__init__(scope, construct_id)
        self._policy = StagePolicy.for_stage(stage)
        self.gateway = gateway
        self.config = config if config is not None else gateway.config.observability
        self.namespace = gateway.metric_namespace
        self.service_name = gateway.service_name
        given = (
            list(endpoints)
            if endpoints is not None
            else [*gateway.llm_endpoints, *gateway.llm_components]
        )
        self.endpoints = _unique([e for e in given if isinstance(e, LlmEndpoint)])
        self.components: list[LlmInferenceComponent] = list(
            {e.node.path: e for e in given if isinstance(e, LlmInferenceComponent)}.values()
        )
        """Inference components: copies, no-capacity failures and GPU use per component."""
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
            build_dashboard(self) if self.config.dashboard else None
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
        return self._by_dimension(Metric.ERRORS, DIMENSION_KIND, route, period)

    def guardrail_actions(
        self, route: str, *, period: Duration | None = None
    ) -> cloudwatch.SearchExpression:
        """One time series per guardrail ``action`` of ``route`` (blocked, passed, …)."""
        return self._by_dimension(Metric.GUARDRAIL_ACTIONS, DIMENSION_ACTION, route, period)

    def _by_dimension(
        self, metric: Metric, dimension: str, route: str, period: Duration | None
    ) -> cloudwatch.SearchExpression:
        seconds = int((period or GRAPH_PERIOD).to_seconds())
        schema = f"{{{self.namespace},{dimension},route,service}}"
        terms = f'MetricName="{metric}" service="{self.service_name}" route="{route}"'
        return cloudwatch.SearchExpression(
            expression=f"SEARCH('{schema} {terms}', 'Sum', {seconds})",
            label=f"${{PROP('Dim.{dimension}')}}",
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
