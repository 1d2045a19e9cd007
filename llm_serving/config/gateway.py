"""Typed schema for the streaming gateway (``model_configs/gateway.yaml``).

The file is optional: without it every section takes the defaults below (two tiers, one
``default`` consumer, one route per model config). Like the model schema it is frozen and
``extra="forbid"``, so a misspelt key fails synth. References to model configs (route backends,
and consumers' routes when routes are omitted) are checked by :meth:`GatewayConfig.check_models`
once the model configs are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from llm_gateway.contract import (
    WEIGHT_MAX,
    Cooldown,
    RoutePolicy,
    TokenQuota,
    check_weights,
)
from llm_serving.config.loader import ConfigError, _format_errors, _read_yaml

GATEWAY_FILE = "gateway.yaml"

LambdaArchitecture = Literal["arm64", "x86_64"]

# Publisher accounts of the Lambda Web Adapter layers (awslabs/aws-lambda-web-adapter docs).
WEB_ADAPTER_ACCOUNT = "753240598075"
WEB_ADAPTER_CHINA_ACCOUNTS: dict[str, str] = {
    "cn-north-1": "041581134020",
    "cn-northwest-1": "069767869989",
}
_LAYER_NAMES: dict[str, str] = {
    "arm64": "LambdaAdapterLayerArm64",
    "x86_64": "LambdaAdapterLayerX86",
}
_COMMERCIAL_REGION = re.compile(r"^[a-z]{2}-[a-z]+-\d$")
_OTHER_PARTITIONS = ("us-gov-", "us-iso", "eu-isoe-", "eusc-")

# CloudWatch Logs PutRetentionPolicy accepts exactly these.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebAdapter(_Strict):
    """The AWS Lambda Web Adapter layer that turns invocations into HTTP requests."""

    layer_version: int = Field(
        26, ge=1, description="Published layer version (the adapter's docs list 26)."
    )
    architecture: LambdaArchitecture = Field(
        "arm64", description="Function architecture; selects the layer and the bundled wheels."
    )
    layer_arn: str | None = Field(
        None,
        pattern=r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]+:\d+$",
        description=(
            "Full layer ARN, overriding the published one (partitions without a published "
            "layer, or a copy in your own account). Must be in the stack's region."
        ),
    )

    def resolve_layer_arn(self, region: str) -> str:
        """The layer ARN for ``region`` (a concrete region name, not a token)."""
        if self.layer_arn is not None:
            arn_region = self.layer_arn.split(":")[3]
            if arn_region != region:
                raise ConfigError(
                    f"{GATEWAY_FILE}: web_adapter.layer_arn is in {arn_region} but the gateway "
                    f"deploys to {region}; fix: use the layer's ARN in {region} (Lambda layers "
                    "are regional)"
                )
            return self.layer_arn
        layer = f"{_LAYER_NAMES[self.architecture]}:{self.layer_version}"
        if region in WEB_ADAPTER_CHINA_ACCOUNTS:
            if self.architecture != "x86_64":
                raise ConfigError(
                    f"{GATEWAY_FILE}: web_adapter.architecture: the Lambda Web Adapter is "
                    f"published for x86_64 only in {region}; fix: set "
                    "web_adapter.architecture: x86_64 (or set web_adapter.layer_arn)"
                )
            account = WEB_ADAPTER_CHINA_ACCOUNTS[region]
            return f"arn:aws-cn:lambda:{region}:{account}:layer:{layer}"
        if region.startswith(("cn-", *_OTHER_PARTITIONS)) or not _COMMERCIAL_REGION.match(region):
            raise ConfigError(
                f"{GATEWAY_FILE}: web_adapter: no published Lambda Web Adapter layer is known "
                f"for region {region!r}; fix: publish the layer in that region and set "
                "web_adapter.layer_arn to its ARN"
            )
        return f"arn:aws:lambda:{region}:{WEB_ADAPTER_ACCOUNT}:layer:{layer}"


class FunctionSettings(_Strict):
    """The proxy function's size and logs."""

    memory_mb: int = Field(
        1024, ge=128, le=10240, description="Lambda memory (CPU scales with it), 128–10240 MB."
    )
    reserved_concurrency: int | None = Field(
        None,
        ge=1,
        description=(
            "Reserved concurrent executions: caps the gateway and guarantees it capacity. "
            "Reserving needs headroom in the account: Lambda keeps 100 executions unreserved, "
            "so deploys fail in accounts at the default quota of 1000 if the total reserved "
            "would exceed 900 (and new accounts may have a quota of only 10)."
        ),
    )
    log_retention_days: int | None = Field(
        None,
        description=(
            "Retention of the function's and the access logs, in days; default: the stage's "
            "(two weeks in dev, one year in prod)."
        ),
        json_schema_extra={"enum": [*LOG_RETENTION_DAYS, None]},
    )

    @field_validator("log_retention_days")
    @classmethod
    def _cloudwatch_retention(cls, value: int | None) -> int | None:
        if value is not None and value not in LOG_RETENTION_DAYS:
            allowed = ", ".join(str(d) for d in LOG_RETENTION_DAYS)
            raise ValueError(
                f"{value} is not a CloudWatch Logs retention period; use one of {allowed}"
            )
        return value


class Limits(_Strict):
    """What the function accepts from clients."""

    max_request_bytes: int = Field(
        1_048_576,
        gt=0,
        le=6_291_456,
        description="Largest request body; Lambda's invocation payload cap is 6 MiB.",
    )


class Upstream(_Strict):
    """Timeouts talking to the SageMaker runtime."""

    connect_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Time allowed to connect to the SageMaker runtime."
    )
    read_timeout_s: float = Field(
        120.0,
        gt=0,
        le=900,
        description="Longest silence between two upstream bytes (a first token included).",
    )


_LEGACY_API_KEYS = ("throttle_rate_limit", "throttle_burst_limit", "quota_requests_per_day")


class Api(_Strict):
    """Account-level settings of the REST API (request limits are per tier: ``tiers``)."""

    account_cloudwatch_role: bool = Field(
        True,
        description=(
            "Create API Gateway's account-wide CloudWatch Logs role (needed for execution "
            "logs). Set false if the account already has one set up elsewhere: there is one "
            "per account and region, and the last stack to set it wins."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_to_tiers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            legacy = [key for key in _LEGACY_API_KEYS if key in data]
            if legacy:
                raise ValueError(
                    f"{', '.join(legacy)} moved to the tiers (one usage plan per tier); fix: "
                    f"remove {'it' if len(legacy) == 1 else 'them'} from api and set "
                    "rate_limit, burst_limit and requests_per_day under tiers.<name>"
                )
        return data


# --- Consumers, tiers, routes ------------------------------------------------------------------

NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
"""Tier and consumer names: lower-case words joined by single hyphens (``team-a``)."""
LowerName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]


def pascal_case(name: str) -> str:
    """``team-a`` → ``TeamA``: the CloudFormation-safe form of a tier or consumer name, used in
    construct and output ids (``ApiKeyIdTeamA``)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


class TierConfig(TokenQuota):
    """What a consumer of this tier may use. Requests and rates are enforced by API Gateway
    (the tier's usage plan, per API key, best effort); tokens by the gateway function
    (``tokens_per_day``, ``tokens_per_month``, ``default_reservation``: the wire contract's
    :class:`~llm_gateway.contract.TokenQuota`)."""

    requests_per_day: int | None = Field(
        None, ge=1, description="Request quota per key per day (at most one request quota)."
    )
    requests_per_month: int | None = Field(
        None, ge=1, description="Request quota per key per month (at most one request quota)."
    )
    rate_limit: float = Field(gt=0, description="Steady requests per second per key.")
    burst_limit: int = Field(ge=1, description="Burst requests per key.")

    @model_validator(mode="after")
    def _one_request_quota_and_reservations_fit(self) -> TierConfig:
        if self.requests_per_day is not None and self.requests_per_month is not None:
            raise ValueError(
                "requests_per_day and requests_per_month are both set, but a usage plan has one "
                "request quota; fix: keep one of them"
            )
        for field in ("tokens_per_day", "tokens_per_month"):
            quota = getattr(self, field)
            if quota is not None and self.default_reservation > quota:
                raise ValueError(
                    f"default_reservation ({self.default_reservation}) exceeds {field} "
                    f"({quota}), so no request without max_tokens could ever be admitted; fix: "
                    f"lower default_reservation or raise {field}"
                )
        return self

    @property
    def request_quota(self) -> tuple[int, Literal["DAY", "MONTH"]] | None:
        """``(limit, period)`` of the usage plan's request quota, if any."""
        if self.requests_per_day is not None:
            return self.requests_per_day, "DAY"
        if self.requests_per_month is not None:
            return self.requests_per_month, "MONTH"
        return None


class ConsumerConfig(_Strict):
    """One caller: an API key (generated by AWS) in its tier's usage plan."""

    name: LowerName = Field(description="Lower-case id (``team-a``); unique.")
    tier: str = Field(description="A key of ``tiers``.")
    routes: tuple[str, ...] | None = Field(
        None, description="Model aliases this consumer may call; omitted: all of them."
    )

    @field_validator("routes")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            repeated = sorted({alias for alias in value if value.count(alias) > 1})
            raise ValueError(f"lists {repeated} more than once; fix: list each alias once")
        return value


class BackendConfig(_Strict):
    """One backend of a route: a model config (its endpoint) and an optional canary weight."""

    model: str = Field(min_length=1, description="The ``name`` of a model config.")
    weight: int | None = Field(
        None,
        ge=0,
        le=WEIGHT_MAX,
        description=(
            "Share of first attempts among the weighted backends (canary); unweighted "
            "backends only serve fallback attempts, in the listed order."
        ),
    )


class RouteConfig(RoutePolicy):
    """A model alias clients send as ``model``, served by ordered backends (the policy fields
    are the wire contract's :class:`~llm_gateway.contract.RoutePolicy`)."""

    model: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="The alias clients send as ``model``.",
    )
    backends: tuple[BackendConfig, ...] = Field(
        min_length=1, description="Model configs serving it, in fallback order."
    )

    @model_validator(mode="after")
    def _backends_make_sense(self) -> RouteConfig:
        names = [backend.model for backend in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(
                f"route {self.model!r} lists a backend model more than once; fix: list each "
                "model config once"
            )
        check_weights(self.model, [b.weight for b in self.backends])
        if self.sticky and all(b.weight is None for b in self.backends):
            raise ValueError(
                f"route {self.model!r}: sticky only fixes a weighted choice, and no backend has "
                "a weight; fix: set weights or remove sticky"
            )
        return self


class FallbackConfig(Cooldown):
    """When the function stops trying a failing backend (per function instance): the wire
    contract's :class:`~llm_gateway.contract.Cooldown`."""


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"


class ObservabilityConfig(_Strict):
    """The gateway stack's CloudWatch dashboard and alarms (:class:`InferenceDashboard`).

    Every alarm notifies one KMS-encrypted SNS topic; it compares a 5-minute statistic with
    its threshold (alarming when above it), and a period without data is not breaching.
    """

    dashboard: bool = Field(
        True, description="Create the CloudWatch dashboard (the alarms are created either way)."
    )
    ttfb_p99_ms: float = Field(
        2000.0,
        gt=0,
        le=900_000,
        description=(
            "Per route: alarm when the gateway's TimeToFirstByte p99 (streamed requests, as "
            "the client sees it minus the network) stays above this many milliseconds."
        ),
    )
    endpoint_5xx_rate: float = Field(
        0.05,
        gt=0,
        lt=1,
        description=(
            "Per endpoint: alarm when Invocation5XXErrors' average (the fraction of "
            "invocations that failed with 5xx) stays above this."
        ),
    )
    gpu_memory_percent: float = Field(
        95.0,
        gt=0,
        lt=100,
        description=(
            "Per endpoint: alarm when GPU memory, normalized to 0-100 % of all the instance's "
            "GPUs, stays above this. vLLM/LMI/TGI preallocate gpu_memory_utilization of each "
            "GPU, so it must be above every endpoint's gpu_memory_utilization × 100."
        ),
    )
    lambda_errors: int = Field(
        5,
        ge=0,
        description="Alarm when the gateway function reports more errors than this in 5 minutes.",
    )
    fallback_rate: float = Field(
        0.2,
        gt=0,
        le=4,
        description=(
            "Per route: alarm when Fallbacks / Requests (failed attempts before the serving "
            "one, per request; up to max_attempts - 1) stays above this."
        ),
    )
    alarm_email: str | None = Field(
        None,
        description=(
            "Subscribe this address to the alarm topic (SNS emails a confirmation link "
            "first); null: no subscription."
        ),
    )

    @field_validator("alarm_email")
    @classmethod
    def _email_address(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 254 or not re.fullmatch(EMAIL_PATTERN, value)):
            raise ValueError(
                f"{value!r} is not an email address; fix: give one address like "
                "ops@example.com, or null for no subscription"
            )
        return value


def _default_tiers() -> dict[str, TierConfig]:
    return {
        "standard": TierConfig(
            rate_limit=10,
            burst_limit=20,
            requests_per_day=10_000,
            tokens_per_day=2_000_000,
            default_reservation=1024,
        ),
        "trial": TierConfig(
            rate_limit=1,
            burst_limit=2,
            requests_per_day=200,
            tokens_per_day=50_000,
            tokens_per_month=500_000,
            default_reservation=512,
        ),
    }


def _default_consumers() -> tuple[ConsumerConfig, ...]:
    return (ConsumerConfig(name="default", tier="standard"),)


class GatewayConfig(_Strict):
    """Everything about the gateway that is not per model.

    ``routes`` names model configs; :meth:`check_models` checks those names (and consumers'
    routes when ``routes`` is omitted) once the model configs are known. The app routes to
    every model config (a subset leaves the gateway out: ``stacks.build``).
    """

    web_adapter: WebAdapter = Field(
        default_factory=WebAdapter, description="The Lambda Web Adapter layer."
    )
    function: FunctionSettings = Field(
        default_factory=FunctionSettings, description="The proxy function's size and logs."
    )
    limits: Limits = Field(default_factory=Limits, description="What clients may send.")
    upstream: Upstream = Field(
        default_factory=Upstream, description="Timeouts talking to the SageMaker runtime."
    )
    api: Api = Field(default_factory=Api, description="Account-level settings of the REST API.")
    tiers: dict[LowerName, TierConfig] = Field(
        default_factory=_default_tiers,
        min_length=1,
        description="Usage tiers by name (one usage plan each); at least one.",
    )
    consumers: tuple[ConsumerConfig, ...] = Field(
        default_factory=_default_consumers,
        description="Callers, one API key each; names unique.",
    )
    routes: tuple[RouteConfig, ...] | None = Field(
        None, description="Omitted: one route per model config, named after it."
    )
    fallback: FallbackConfig = Field(
        default_factory=FallbackConfig, description="When a failing backend is skipped."
    )
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig, description="Dashboard and alarm thresholds."
    )

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        self._check_consumers()
        if self.routes is not None:
            aliases = [route.model for route in self.routes]
            for i, alias in enumerate(aliases):
                if alias in aliases[:i]:
                    raise ValueError(
                        f"routes.{i}.model: alias {alias!r} is routed twice; fix: merge the two "
                        "routes' backends into one route"
                    )
            self._check_consumer_routes(aliases, what="the aliases under routes")
        return self

    def _check_consumers(self) -> None:
        tiers = sorted(self.tiers)
        defaulted = "" if "consumers" in self.model_fields_set else " (the default consumer)"
        seen: dict[str, str] = {}
        for i, consumer in enumerate(self.consumers):
            if consumer.tier not in self.tiers:
                raise ValueError(
                    f"consumers.{i}.tier: consumer {consumer.name!r}{defaulted} has unknown tier "
                    f"{consumer.tier!r}; fix: use one of {tiers} or add it under tiers"
                )
            key = pascal_case(consumer.name)
            if key in seen:
                same = (
                    "is listed twice"
                    if seen[key] == consumer.name
                    else f"and {seen[key]!r} give the same CloudFormation id {key!r}"
                )
                raise ValueError(
                    f"consumers.{i}.name: consumer {consumer.name!r} {same}; fix: give each "
                    "consumer a distinct name"
                )
            seen[key] = consumer.name

    def _check_consumer_routes(self, aliases: Sequence[str], *, what: str) -> None:
        for i, consumer in enumerate(self.consumers):
            unknown = [alias for alias in consumer.routes or () if alias not in aliases]
            if unknown:
                raise ValueError(
                    f"consumers.{i}.routes: consumer {consumer.name!r} may call {unknown}, which "
                    f"no route serves; fix: use {what}: {sorted(aliases)}"
                )

    def check_models(self, model_names: Collection[str], path: Path | str = GATEWAY_FILE) -> None:
        """Check the names that refer to model configs (``routes.*.backends.*.model``, and
        ``consumers.*.routes`` when ``routes`` is omitted); ``path`` names the file in errors.
        Raises :class:`ConfigError`."""
        known = sorted(model_names)
        for i, route in enumerate(self.routes or ()):
            for j, backend in enumerate(route.backends):
                if backend.model not in model_names:
                    raise ConfigError(
                        f"{path}: routes.{i}.backends.{j}.model: {backend.model!r} is not a "
                        f"model config; fix: use the name of one of {known}"
                    )
        if self.routes is None:
            try:
                self._check_consumer_routes(
                    known, what="model config names (each model is routed under its name)"
                )
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None

    def effective_routes(self, model_names: Sequence[str]) -> tuple[RouteConfig, ...]:
        """``routes``, or one route per model config named after it when omitted."""
        if self.routes is not None:
            return self.routes
        return tuple(
            RouteConfig(model=name, backends=(BackendConfig(model=name),)) for name in model_names
        )


def _format_gateway_errors(path: Path, exc: ValidationError) -> str:
    """Like the model configs' messages; cross-field checks name their own field."""
    lines = _format_errors(path, exc, kind="gateway config").split("\n")
    return "\n".join(line.replace("  (top level): ", "  ", 1) for line in lines)


def parse_gateway_config(data: object, path: Path) -> GatewayConfig:
    """Validate already-loaded YAML data; ``path`` is only used in messages."""
    if data is None:  # an empty file
        return GatewayConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_gateway_errors(path, exc)) from None


def load_gateway_config(config_dir: Path) -> GatewayConfig:
    """Read ``<config_dir>/gateway.yaml``; all defaults if the file does not exist."""
    path = config_dir / GATEWAY_FILE
    if not path.exists():
        return GatewayConfig()
    return parse_gateway_config(_read_yaml(path), path)
