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

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llm_serving.config.gateway_access import (
    NAME_PATTERN,
    BackendConfig,
    ConsumerConfig,
    FallbackConfig,
    LowerName,
    RouteConfig,
    TierConfig,
    _default_consumers,
    _default_tiers,
    pascal_case,
)
from llm_serving.config.gateway_platform import (
    GATEWAY_FILE,
    LOG_RETENTION_DAYS,
    Api,
    FunctionSettings,
    Limits,
    Upstream,
    WebAdapter,
    _Strict,
)
from llm_serving.config.gateway_safety import GuardrailConfig, RouteGuardrail
from llm_serving.config.loader import ConfigError, _format_errors, _read_yaml

__all__ = [
    "GATEWAY_FILE",
    "LOG_RETENTION_DAYS",
    "NAME_PATTERN",
    "Api",
    "BackendConfig",
    "ConsumerConfig",
    "FallbackConfig",
    "FunctionSettings",
    "GatewayConfig",
    "GuardrailConfig",
    "Limits",
    "ObservabilityConfig",
    "RouteConfig",
    "RouteGuardrail",
    "TierConfig",
    "Upstream",
    "WebAdapter",
    "load_gateway_config",
    "parse_gateway_config",
    "pascal_case",
]

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
    guardrails: dict[LowerName, GuardrailConfig] = Field(
        default_factory=dict,
        description="Amazon Bedrock guardrails by name, for routes' ``guardrail``; none: {}.",
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
            for i, route in enumerate(self.routes):
                if route.guardrail is not None and route.guardrail.name not in self.guardrails:
                    raise ValueError(
                        f"routes.{i}.guardrail.name: {route.guardrail.name!r} is not defined; "
                        f"fix: use one of {sorted(self.guardrails)} or define it under "
                        "guardrails"
                    )
        return self

    @property
    def applied_guardrails(self) -> list[str]:
        """The names of ``guardrails`` that ``routes`` apply, in definition order."""
        used = {r.guardrail.name for r in self.routes or () if r.guardrail is not None}
        return [name for name in self.guardrails if name in used]

    @property
    def caching(self) -> bool:
        """Whether any route caches answers (the gateway then has a cache table)."""
        return any(route.cache is not None for route in self.routes or ())

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
