"""InferenceDashboard: the dashboard body against the gateway's metric contract and SageMaker's
units, the alarms and their thresholds, the encrypted alarm topic, and the observability
config."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from llm_serving import InferenceDashboard, LlmEndpoint, ModelArtifacts, Stage, StreamingGateway
from llm_serving.config import ConfigError, GatewayConfig, ModelConfig, load_gateway_config
from llm_serving.config.gateway import ObservabilityConfig
from llm_serving.gateway_routes import GatewayRoute, RouteBackend
from stacks import BuiltApp
from tests.conftest import CONFIG_DIR, build_default, make_app, variant

GATEWAY_STACK = "LlmServing-dev-Gateway"
DEEPSEEK = "deepseek-r1-distill-qwen-7b"
LLAMA = "llama-2-13b-chat"
GPUS = {DEEPSEEK: 1, LLAMA: 4}  # ml.g5.2xlarge, ml.g5.12xlarge
HOST_NAMESPACE = "/aws/sagemaker/Endpoints"


# --- Reading the dashboard body -------------------------------------------------------------


def _placeholder(token: dict[str, Any]) -> str:
    if "Ref" in token:
        return "${Ref:" + token["Ref"] + "}"
    if "Fn::GetAtt" in token:
        return "${GetAtt:" + ".".join(token["Fn::GetAtt"]) + "}"
    raise AssertionError(f"unexpected token in the dashboard body: {token}")


def dashboard_body(template: Template) -> dict[str, Any]:
    """The one dashboard's body: its ``Fn::Join`` joined, tokens as ``${Ref:…}`` placeholders."""
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    if isinstance(body, dict):
        separator, parts = body["Fn::Join"]
        body = separator.join(p if isinstance(p, str) else _placeholder(p) for p in parts)
    parsed: dict[str, Any] = json.loads(body)
    return parsed


@dataclass
class Line:
    """One entry of a graph's ``metrics``: a metric or an expression."""

    namespace: str | None = None
    name: str | None = None
    dimensions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def stat(self) -> str:
        return str(self.options.get("stat", "Average"))  # CloudWatch's default

    @property
    def expression(self) -> str | None:
        return self.options.get("expression")


def _lines(widget: dict[str, Any]) -> list[Line]:
    lines = []
    for entry in widget["properties"]["metrics"]:
        options = entry[-1] if isinstance(entry[-1], dict) else {}
        values = entry[:-1] if options else entry
        if not values:
            lines.append(Line(options=options))
            continue
        namespace, name, *dims = values
        dimensions = dict(zip(dims[::2], dims[1::2], strict=True))
        lines.append(Line(namespace, name, dimensions, options))
    return lines


def _widget(body: dict[str, Any], title: str) -> dict[str, Any]:
    (widget,) = [w for w in body["widgets"] if w["properties"].get("title") == title]
    return widget


def _raw(widget: dict[str, Any], expression: Line) -> Line:
    """The hidden metric an expression refers to (expressions here use one id)."""
    assert expression.expression is not None
    raw_id = expression.expression.split()[0]
    (raw,) = [line for line in _lines(widget) if line.options.get("id") == raw_id]
    assert raw.options["visible"] is False
    return raw


@pytest.fixture(scope="module")
def built(default_app: tuple[App, BuiltApp]) -> BuiltApp:
    return default_app[1]


@pytest.fixture(scope="module")
def template(templates: dict[str, Template]) -> Template:
    return templates[GATEWAY_STACK]


@pytest.fixture(scope="module")
def body(template: Template) -> dict[str, Any]:
    return dashboard_body(template)


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    """The dashboard construct's alarms' properties by alarm name (a stack built here also
    holds the endpoints' own rollback alarms)."""
    return {
        a["Properties"]["AlarmName"]: a["Properties"]
        for i, a in template.find_resources("AWS::CloudWatch::Alarm").items()
        if i.startswith("Observability")
    }


def _logical_id(template: Template, resource_type: str, fragment: str) -> str:
    (logical_id,) = [i for i in template.find_resources(resource_type) if fragment in i]
    return logical_id


# --- Routes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [DEEPSEEK, LLAMA])
def test_route_latency_widgets_follow_the_metric_contract(body: dict[str, Any], route: str) -> None:
    route_dims = {"service": GATEWAY_STACK, "route": route}
    for title, metric in [
        (f"{route}: gateway TTFB (ms)", "TimeToFirstByte"),
        (f"{route}: upstream TTFB (ms)", "UpstreamTimeToFirstByte"),
    ]:
        lines = _lines(_widget(body, title))
        assert [(m.namespace, m.name, m.dimensions) for m in lines] == [
            ("LlmGateway", metric, route_dims)
        ] * 3
        assert [m.stat for m in lines] == ["p50", "p90", "p99"]
        assert {m.options["period"] for m in lines} == {60}
    ttfb = _widget(body, f"{route}: gateway TTFB (ms)")
    assert ttfb["properties"]["annotations"]["horizontal"][0]["value"] == 2000
    # The two latency graphs sit side by side.
    upstream = _widget(body, f"{route}: upstream TTFB (ms)")
    assert (ttfb["y"], ttfb["x"] + ttfb["width"]) == (upstream["y"], upstream["x"])
    throughput = _lines(_widget(body, f"{route}: output tokens per second (per request)"))
    assert {(m.namespace, m.name) for m in throughput} == {("LlmGateway", "OutputTokensPerSecond")}
    assert all(m.dimensions == route_dims for m in throughput)


@pytest.mark.parametrize("route", [DEEPSEEK, LLAMA])
def test_route_counts_and_errors_by_kind(body: dict[str, Any], route: str) -> None:
    route_dims = {"service": GATEWAY_STACK, "route": route}
    counts = _lines(_widget(body, f"{route}: requests, fallbacks, quota rejections"))
    assert [(m.namespace, m.name, m.dimensions, m.stat) for m in counts] == [
        ("LlmGateway", name, route_dims, "Sum")
        for name in ("Requests", "Fallbacks", "QuotaRejections")
    ]
    tokens = _lines(_widget(body, f"{route}: tokens"))
    assert [(m.name, m.dimensions, m.stat) for m in tokens] == [
        ("InputTokens", route_dims, "Sum"),
        ("OutputTokens", route_dims, "Sum"),
    ]
    (errors,) = _lines(_widget(body, f"{route}: errors by kind"))
    assert errors.expression == (
        'SEARCH(\'{LlmGateway,kind,route,service} MetricName="Errors" '
        f'service="{GATEWAY_STACK}" route="{route}"\', \'Sum\', 60)'
    )
    assert errors.options["label"] == "${PROP('Dim.kind')}"


def test_single_backend_routes_have_no_backend_comparison(body: dict[str, Any]) -> None:
    assert not [w for w in body["widgets"] if "by backend" in w["properties"].get("title", "")]


def test_text_explains_how_ttfb_is_measured(body: dict[str, Any]) -> None:
    text = body["widgets"][0]["properties"]["markdown"]
    assert "first SSE chunk" in text
    assert "UpstreamTimeToFirstByte" in text
    assert f"`service` = `{GATEWAY_STACK}`" in text
    assert "no time-to-first-byte metric" in text


# --- Endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [DEEPSEEK, LLAMA])
def test_gpu_metrics_are_divided_by_the_instance_gpu_count(
    body: dict[str, Any], built: BuiltApp, model: str
) -> None:
    endpoint_name = built.models[model].endpoint.endpoint_name
    for title, metric in [
        (f"{model}: GPU utilization (% of all GPUs)", "GPUUtilization"),
        (f"{model}: GPU memory (% of all GPUs)", "GPUMemoryUtilization"),
    ]:
        widget = _widget(body, title)
        (expression,) = [line for line in _lines(widget) if line.expression]
        assert expression.expression == f"raw / {GPUS[model]}"
        raw = _raw(widget, expression)
        assert (raw.namespace, raw.name, raw.stat) == (HOST_NAMESPACE, metric, "Average")
        assert raw.dimensions == {"EndpointName": endpoint_name, "VariantName": "AllTraffic"}
        assert widget["properties"]["yAxis"]["left"] == {
            "min": 0,
            "max": 100,
            "label": "%",
            "showUnits": False,
        }


@pytest.mark.parametrize("model", [DEEPSEEK, LLAMA])
def test_model_latency_is_charted_in_milliseconds(
    body: dict[str, Any], built: BuiltApp, model: str
) -> None:
    endpoint_name = built.models[model].endpoint.endpoint_name
    widget = _widget(body, f"{model}: model latency (ms)")
    expressions = [line for line in _lines(widget) if line.expression]
    assert [e.expression for e in expressions] == [
        "modellatency_p50 / 1000",
        "modellatency_p90 / 1000",
        "modellatency_p99 / 1000",
        "overheadlatency_p90 / 1000",
    ]
    raws = [_raw(widget, e) for e in expressions]
    assert [(r.namespace, r.name, r.stat) for r in raws] == [
        ("AWS/SageMaker", "ModelLatency", "p50"),
        ("AWS/SageMaker", "ModelLatency", "p90"),
        ("AWS/SageMaker", "ModelLatency", "p99"),
        ("AWS/SageMaker", "OverheadLatency", "p90"),
    ]
    assert all(r.dimensions["EndpointName"] == endpoint_name for r in raws)
    assert expressions[0].options["label"] == "Model latency p50 (ms)"


def test_endpoint_host_invocation_and_concurrency_widgets(
    body: dict[str, Any], built: BuiltApp
) -> None:
    dims = {"EndpointName": built.models[LLAMA].endpoint.endpoint_name, "VariantName": "AllTraffic"}
    host = _lines(_widget(body, f"{LLAMA}: CPU (0–100 × vCPUs), memory and disk (%)"))
    assert [(m.namespace, m.name, m.dimensions) for m in host] == [
        (HOST_NAMESPACE, name, dims)
        for name in ("CPUUtilization", "MemoryUtilization", "DiskUtilization")
    ]
    assert host[0].options["label"] == "CPU (0–100 × vCPUs)"
    widget = _widget(body, f"{LLAMA}: invocations and 4xx/5xx rates")
    invocations = _lines(widget)
    assert [(m.namespace, m.name, m.stat, m.options.get("yAxis")) for m in invocations] == [
        ("AWS/SageMaker", "Invocations", "Sum", None),
        ("AWS/SageMaker", "Invocation4XXErrors", "Average", "right"),
        ("AWS/SageMaker", "Invocation5XXErrors", "Average", "right"),
    ]
    assert widget["properties"]["annotations"]["horizontal"][0]["value"] == 0.05
    (concurrency,) = _lines(_widget(body, f"{LLAMA}: concurrent requests per model (max)"))
    assert (concurrency.name, concurrency.stat) == ("ConcurrentRequestsPerModel", "Maximum")


# --- API Gateway and Lambda -----------------------------------------------------------------


def test_api_gateway_and_lambda_widgets(body: dict[str, Any], template: Template) -> None:
    api_name = next(iter(template.find_resources("AWS::ApiGateway::RestApi").values()))[
        "Properties"
    ]["Name"]
    api_lines = [
        line
        for title in (
            "API requests",
            "API 4XX and 5XX",
            "API latency and integration latency (ms)",
        )
        for line in _lines(_widget(body, title))
    ]
    assert [(m.namespace, m.name, m.stat) for m in api_lines] == [
        ("AWS/ApiGateway", "Count", "Sum"),
        ("AWS/ApiGateway", "4XXError", "Sum"),
        ("AWS/ApiGateway", "5XXError", "Sum"),
        ("AWS/ApiGateway", "Latency", "p50"),
        ("AWS/ApiGateway", "Latency", "p99"),
        ("AWS/ApiGateway", "IntegrationLatency", "p50"),
        ("AWS/ApiGateway", "IntegrationLatency", "p99"),
    ]
    assert {json.dumps(m.dimensions) for m in api_lines} == {json.dumps({"ApiName": api_name})}
    function = _logical_id(template, "AWS::Lambda::Function", "GatewayFunction")
    lambda_lines = [
        line
        for title in (
            "Function duration (ms)",
            "Function errors and throttles",
            "Function concurrent executions",
        )
        for line in _lines(_widget(body, title))
    ]
    assert [(m.namespace, m.name, m.stat) for m in lambda_lines] == [
        ("AWS/Lambda", "Duration", "p50"),
        ("AWS/Lambda", "Duration", "p99"),
        ("AWS/Lambda", "Duration", "Maximum"),
        ("AWS/Lambda", "Errors", "Sum"),
        ("AWS/Lambda", "Throttles", "Sum"),
        ("AWS/Lambda", "ConcurrentExecutions", "Maximum"),
    ]
    assert all(m.dimensions == {"FunctionName": "${Ref:" + function + "}"} for m in lambda_lines)


def test_every_widget_fits_the_grid_and_every_alarm_is_shown(
    body: dict[str, Any], template: Template
) -> None:
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24
    (status,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    alarm_ids = template.find_resources("AWS::CloudWatch::Alarm")
    assert sorted(status["properties"]["alarms"]) == sorted(
        "${GetAtt:" + i + ".Arn}" for i in alarm_ids
    )


def test_dashboard_is_named_per_stack_and_region(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Dashboard", {"DashboardName": f"{GATEWAY_STACK}-us-east-1"}
    )
    outputs = template.find_outputs("*")
    assert outputs["DashboardName"]["Value"] == f"{GATEWAY_STACK}-us-east-1"
    assert outputs["DashboardUrl"]["Value"] == (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        f"#dashboards/dashboard/{GATEWAY_STACK}-us-east-1"
    )
    topic = _logical_id(template, "AWS::SNS::Topic", "AlarmTopic")
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": topic}


# --- Alarms ---------------------------------------------------------------------------------


def _check_common(alarm: dict[str, Any], topic: str, *, periods: int = 3) -> None:
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (periods, periods)
    assert alarm["AlarmActions"] == [{"Ref": topic}]


def _math(alarm: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """An alarm's expression and its metrics by id."""
    (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
    metrics = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
    return expression["Expression"], metrics


def test_default_alarms(template: Template, built: BuiltApp) -> None:
    alarms = _alarms(template)
    topic = _logical_id(template, "AWS::SNS::Topic", "AlarmTopic")
    prefix = f"{GATEWAY_STACK}-"
    assert sorted(alarms) == sorted(
        [f"{prefix}lambda-errors"]
        + [
            f"{prefix}{kind}-{name}"
            for name in (DEEPSEEK, LLAMA)
            for kind in ("ttfb-p99", "fallback-rate", "endpoint-5xx", "gpu-memory")
        ]
    )
    for route in (DEEPSEEK, LLAMA):
        route_dims = [
            {"Name": "route", "Value": route},
            {"Name": "service", "Value": GATEWAY_STACK},
        ]
        ttfb = alarms[f"{prefix}ttfb-p99-{route}"]
        _check_common(ttfb, topic)
        assert (ttfb["Namespace"], ttfb["MetricName"], ttfb["ExtendedStatistic"]) == (
            "LlmGateway",
            "TimeToFirstByte",
            "p99",
        )
        assert sorted(ttfb["Dimensions"], key=lambda d: d["Name"]) == route_dims
        assert (ttfb["Period"], ttfb["Threshold"]) == (300, 2000)

        fallback = alarms[f"{prefix}fallback-rate-{route}"]
        _check_common(fallback, topic)
        assert fallback["Threshold"] == 0.2
        expression, metrics = _math(fallback)
        assert expression == "FILL(fallbacks, 0) / requests"
        for metric_id, name in (("fallbacks", "Fallbacks"), ("requests", "Requests")):
            stat = metrics[metric_id]
            assert stat["Metric"]["MetricName"] == name
            assert stat["Metric"]["Namespace"] == "LlmGateway"
            assert sorted(stat["Metric"]["Dimensions"], key=lambda d: d["Name"]) == route_dims
            assert (stat["Stat"], stat["Period"]) == ("Sum", 300)

    for model in (DEEPSEEK, LLAMA):
        endpoint_name = built.models[model].endpoint.endpoint_name
        errors = alarms[f"{prefix}endpoint-5xx-{model}"]
        _check_common(errors, topic)
        assert (errors["MetricName"], errors["Statistic"], errors["Threshold"]) == (
            "Invocation5XXErrors",
            "Average",
            0.05,
        )
        assert {"Name": "EndpointName", "Value": endpoint_name} in errors["Dimensions"]
        memory = alarms[f"{prefix}gpu-memory-{model}"]
        _check_common(memory, topic)
        assert memory["Threshold"] == 95
        expression, metrics = _math(memory)
        assert expression == f"raw / {GPUS[model]}"
        assert metrics["raw"]["Metric"]["MetricName"] == "GPUMemoryUtilization"
        assert (metrics["raw"]["Stat"], metrics["raw"]["Period"]) == ("Average", 300)

    function = alarms[f"{prefix}lambda-errors"]
    _check_common(function, topic, periods=1)
    assert (function["Namespace"], function["MetricName"], function["Statistic"]) == (
        "AWS/Lambda",
        "Errors",
        "Sum",
    )
    assert (function["Period"], function["Threshold"]) == (300, 5)
    function_id = _logical_id(template, "AWS::Lambda::Function", "GatewayFunction")
    assert function["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]


def _config_dir(tmp_path: Path, gateway: dict[str, Any]) -> Path:
    directory = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, directory)
    (directory / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    return directory


OVERRIDES = {
    "ttfb_p99_ms": 1500,
    "endpoint_5xx_rate": 0.01,
    "gpu_memory_percent": 97.5,
    "lambda_errors": 0,
    "fallback_rate": 0.5,
    "alarm_email": "llm-oncall@example.com",
}


def test_thresholds_and_email_come_from_the_config(tmp_path: Path) -> None:
    directory = _config_dir(tmp_path, {"observability": OVERRIDES})
    _, built = build_default(config_dir=directory)
    template = Template.from_stack(built.gateway)
    alarms = _alarms(template)
    prefix = f"{GATEWAY_STACK}-"
    assert {name: alarm["Threshold"] for name, alarm in alarms.items()} == {
        f"{prefix}lambda-errors": 0,
        **{f"{prefix}ttfb-p99-{m}": 1500 for m in (DEEPSEEK, LLAMA)},
        **{f"{prefix}fallback-rate-{m}": 0.5 for m in (DEEPSEEK, LLAMA)},
        **{f"{prefix}endpoint-5xx-{m}": 0.01 for m in (DEEPSEEK, LLAMA)},
        **{f"{prefix}gpu-memory-{m}": 97.5 for m in (DEEPSEEK, LLAMA)},
    }
    topic = _logical_id(template, "AWS::SNS::Topic", "AlarmTopic")
    template.resource_count_is("AWS::SNS::Subscription", 1)
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "llm-oncall@example.com", "TopicArn": {"Ref": topic}},
    )
    body = dashboard_body(template)
    ttfb = _widget(body, f"{DEEPSEEK}: gateway TTFB (ms)")
    assert ttfb["properties"]["annotations"]["horizontal"][0]["value"] == 1500


def test_no_email_subscription_by_default(template: Template) -> None:
    template.resource_count_is("AWS::SNS::Subscription", 0)


def test_dashboard_can_be_turned_off_but_the_alarms_stay(tmp_path: Path) -> None:
    directory = _config_dir(tmp_path, {"observability": {"dashboard": False}})
    _, built = build_default(config_dir=directory)
    template = Template.from_stack(built.gateway)
    template.resource_count_is("AWS::CloudWatch::Dashboard", 0)
    assert len(_alarms(template)) == 9
    outputs = template.find_outputs("*")
    assert "AlarmTopicArn" in outputs
    assert not {"DashboardName", "DashboardUrl"} & set(outputs)
    assert built.gateway.observability.dashboard is None


# --- Topic and key --------------------------------------------------------------------------


def test_topic_uses_its_own_rotated_key_that_cloudwatch_may_use(template: Template) -> None:
    key_id = _logical_id(template, "AWS::KMS::Key", "AlarmTopicKey")
    topic_id = _logical_id(template, "AWS::SNS::Topic", "AlarmTopic")
    topic = template.find_resources("AWS::SNS::Topic")[topic_id]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = template.find_resources("AWS::KMS::Key")[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    (cloudwatch,) = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch["Effect"] == "Allow"
    assert sorted(cloudwatch["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]


def test_topic_policy_requires_tls_and_admits_only_this_stacks_alarms(
    template: Template,
) -> None:
    topic_id = _logical_id(template, "AWS::SNS::Topic", "AlarmTopic")
    (policy,) = template.find_resources("AWS::SNS::TopicPolicy").values()
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    tls = statements["AllowPublishThroughSSLOnly"]
    assert (tls["Effect"], tls["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    publish = statements["AllowThisStacksAlarmsToPublish"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert (publish["Effect"], publish["Action"]) == ("Allow", "sns:Publish")
    assert publish["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    arn_parts = publish["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Join"][1]
    pattern = "".join(p if isinstance(p, str) else "123456789012" for p in arn_parts)
    assert pattern == f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{GATEWAY_STACK}-*"
    # Every alarm's ARN matches, or CloudWatch would be denied at notification time.
    for name in _alarms(template):
        assert fnmatch.fnmatchcase(
            f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}", pattern
        )


# --- Constructed directly: other stacks, multi-backend routes, odd aliases ------------------


Routes = Callable[[dict[str, LlmEndpoint]], dict[str, GatewayRoute | list[LlmEndpoint]]]


def _dashboard_stack(
    routes: Routes | None = None,
    *,
    config: ObservabilityConfig | None = None,
    models: tuple[str, ...] = (DEEPSEEK, LLAMA),
    repeat_endpoints: bool = False,
    **model_changes: Any,
) -> tuple[Template, InferenceDashboard]:
    """Endpoints, a gateway and the dashboard in one stack named ``Serving-Staging``."""
    app = make_app()
    stack = Stack(app, "Serving-Staging", env={"region": "eu-west-1"})
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    endpoints = {
        name: LlmEndpoint(
            stack,
            name,
            config=ModelConfig.model_validate(variant(name, **model_changes)),
            artifacts=artifacts,
            stage=Stage.DEV,
        )
        for name in models
    }
    gateway = StreamingGateway(
        stack,
        "Gateway",
        routes=routes(endpoints) if routes else {n: [e] for n, e in endpoints.items()},
        config=GatewayConfig(),
        stage=Stage.DEV,
    )
    passed = list(endpoints.values())
    dashboard = InferenceDashboard(
        stack,
        "Observability",
        gateway=gateway,
        endpoints=passed + passed if repeat_endpoints else passed,
        config=config or ObservabilityConfig(),
        stage=Stage.DEV,
    )
    return Template.from_stack(stack), dashboard


CANARY_ALIAS = "meta/chat:canary"


def _canary_routes(
    endpoints: dict[str, LlmEndpoint],
) -> dict[str, GatewayRoute | list[LlmEndpoint]]:
    return {
        CANARY_ALIAS: GatewayRoute(
            backends=(
                RouteBackend(endpoints[LLAMA], weight=90),
                RouteBackend(endpoints[DEEPSEEK], weight=10),
            )
        )
    }


def test_service_dimension_is_the_gateway_stack_name() -> None:
    template, dashboard = _dashboard_stack()
    assert (dashboard.service_name, dashboard.namespace) == ("Serving-Staging", "LlmGateway")
    body = dashboard_body(template)
    (errors,) = _lines(_widget(body, f"{DEEPSEEK}: errors by kind"))
    assert errors.expression is not None
    assert 'service="Serving-Staging"' in errors.expression
    for line in _lines(_widget(body, f"{DEEPSEEK}: gateway TTFB (ms)")):
        assert line.dimensions["service"] == "Serving-Staging"
    assert dashboard.dashboard_name == "Serving-Staging-eu-west-1"


def test_multi_backend_route_compares_its_backends() -> None:
    template, dashboard = _dashboard_stack(_canary_routes)
    body = dashboard_body(template)
    alias = CANARY_ALIAS
    requests = _lines(_widget(body, f"{alias}: requests by backend"))
    assert [(m.name, m.stat, m.dimensions) for m in requests] == [
        ("Requests", "Sum", {"service": "Serving-Staging", "route": alias, "backend": backend})
        for backend in (LLAMA, DEEPSEEK)
    ]
    upstream = _lines(_widget(body, f"{alias}: upstream TTFB p90 by backend (ms)"))
    assert {(m.name, m.stat) for m in upstream} == {("UpstreamTimeToFirstByte", "p90")}
    (header,) = [
        w for w in body["widgets"] if f"Route `{alias}`" in w["properties"].get("markdown", "")
    ]
    assert f"`{LLAMA}` (weight 90), `{DEEPSEEK}` (weight 10)" in header["properties"]["markdown"]
    # An alias with "/" and ":" still makes valid construct ids and alarm names.
    assert {f"ttfb-p99:{alias}", f"fallback-rate:{alias}"} <= set(dashboard.alarms)
    assert "Serving-Staging-ttfb-p99-meta/chat-canary" in _alarms(template)


def test_long_alarm_names_are_cut_to_cloudwatchs_limit() -> None:
    aliases = ["a" * 250 + "1", "a" * 250 + "2"]
    template, _ = _dashboard_stack(
        lambda endpoints: {alias: [endpoints[DEEPSEEK]] for alias in aliases}, models=(DEEPSEEK,)
    )
    names = list(_alarms(template))
    assert len(names) == len(set(names)) == 7  # 2 per route, 2 per endpoint, the function's
    assert all(len(n) <= 255 and n.startswith("Serving-Staging-") for n in names)


# --- Config ---------------------------------------------------------------------------------


def test_shipped_observability_config_is_the_default() -> None:
    assert load_gateway_config(CONFIG_DIR).observability == ObservabilityConfig()
    config = ObservabilityConfig()
    assert (config.ttfb_p99_ms, config.endpoint_5xx_rate, config.gpu_memory_percent) == (
        2000,
        0.05,
        95,
    )
    assert (config.lambda_errors, config.fallback_rate, config.alarm_email) == (5, 0.2, None)
    assert config.dashboard is True


@pytest.mark.parametrize(
    ("observability", "expected"),
    [
        ({"alarm_email": "oncall"}, r"observability\.alarm_email: 'oncall' is not an email "
         r"address; fix: give one address"),
        ({"endpoint_5xx_rate": 1}, r"observability\.endpoint_5xx_rate: Input should be less "
         r"than 1 — fix: correct the value"),
        ({"gpu_memory_percent": 100}, r"observability\.gpu_memory_percent: Input should be "
         r"less than 100"),
        ({"ttfb_p99_ms": 0}, r"observability\.ttfb_p99_ms: Input should be greater than 0"),
        ({"lambda_errors": -1}, r"observability\.lambda_errors: Input should be greater than "
         r"or equal to 0"),
        ({"dashbaord": True}, r"observability\.dashbaord: Extra inputs are not permitted — "
         r"fix: remove it or fix its spelling"),
    ],
)  # fmt: skip
def test_config_errors_name_file_field_and_fix(
    tmp_path: Path, observability: dict[str, Any], expected: str
) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"observability": observability}))
    with pytest.raises(ConfigError) as raised:
        load_gateway_config(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'gateway.yaml'}: invalid gateway config")
    assert re.search(expected, message), message


def test_gpu_memory_threshold_must_clear_the_engines_preallocation(tmp_path: Path) -> None:
    directory = _config_dir(tmp_path, {"observability": {"gpu_memory_percent": 90}})
    with pytest.raises(ValueError, match=r"observability\.gpu_memory_percent \(90\) is not above"):
        build_default(config_dir=directory)
    with pytest.raises(ValueError, match=r"fix: raise gpu_memory_percent above 96"):
        _dashboard_stack(models=(DEEPSEEK,), container__gpu_memory_utilization=0.96)


def test_an_endpoint_passed_twice_is_charted_once() -> None:
    template, dashboard = _dashboard_stack(repeat_endpoints=True)
    assert [e.config.name for e in dashboard.endpoints] == [DEEPSEEK, LLAMA]
    assert len(_alarms(template)) == 9


def test_endpoint_stacks_are_not_referenced(built: BuiltApp, template: Template) -> None:
    """Only the endpoints' deterministic names: no exports, no stack dependency."""
    assert "Fn::ImportValue" not in json.dumps(template.to_json())
    assert not [d for d in built.gateway.dependencies if d in built.models.values()]


def test_routes_whose_alarm_names_would_collide_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"would both be named 'Serving-Staging-ttfb-p99-a-b'"):
        _dashboard_stack(
            lambda endpoints: {alias: [endpoints[DEEPSEEK]] for alias in ("a:b", "a-b")},
            models=(DEEPSEEK,),
        )
