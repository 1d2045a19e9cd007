"""The one wire contract between the construct library and the gateway runtime.

Everything that crosses from synth to the function is declared here, once: the environment
variable names, the routing and consumer tables (pydantic models: the library builds them and
writes ``model_dump_json()`` into the environment; the runtime parses the same models), the
metric namespace, names and dimensions the dashboard charts, and the quota table's key layout
that the table construct declares. No CDK here: the runtime imports this module, and the
library (``llm_serving``) imports it from the same distribution.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# --- Environment -----------------------------------------------------------------------------

ROUTES_ENV: Final = "LLM_GATEWAY_ROUTES"
CONSUMERS_ENV: Final = "LLM_GATEWAY_CONSUMERS"
QUOTA_TABLE_ENV: Final = "LLM_GATEWAY_QUOTA_TABLE"
MAX_REQUEST_BYTES_ENV: Final = "LLM_GATEWAY_MAX_REQUEST_BYTES"
CONNECT_TIMEOUT_ENV: Final = "LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S"
READ_TIMEOUT_ENV: Final = "LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S"
LOCAL_CONSUMER_ENV: Final = "LLM_GATEWAY_LOCAL_CONSUMER"
"""Local runs only (no API Gateway, so no request context): act as this consumer."""
CACHE_TABLE_ENV: Final = "LLM_GATEWAY_CACHE_TABLE"
"""The response cache's DynamoDB table (set when any route caches)."""
CORS_ORIGINS_ENV: Final = "LLM_GATEWAY_CORS_ORIGINS"
"""Comma-separated browser origins allowed to read responses ("" : CORS off; "*": any)."""
CORS_ALLOW_HEADERS: Final = ("authorization", "content-type", "x-api-key")
CORS_EXPOSE_HEADERS: Final = (
    "retry-after",
    "x-llm-backend",
    "x-llm-cache",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)
METRIC_NAMESPACE_ENV: Final = "POWERTOOLS_METRICS_NAMESPACE"
SERVICE_NAME_ENV: Final = "POWERTOOLS_SERVICE_NAME"

# --- Metrics (CloudWatch embedded metric format) ---------------------------------------------

METRIC_NAMESPACE: Final = "LlmGateway"
DEFAULT_SERVICE: Final = "llm-gateway"


class Metric(StrEnum):
    """Every metric the function publishes."""

    REQUESTS = "Requests"
    TIME_TO_FIRST_BYTE = "TimeToFirstByte"
    UPSTREAM_TIME_TO_FIRST_BYTE = "UpstreamTimeToFirstByte"
    DURATION = "Duration"
    INPUT_TOKENS = "InputTokens"
    OUTPUT_TOKENS = "OutputTokens"
    OUTPUT_TOKENS_PER_SECOND = "OutputTokensPerSecond"
    FALLBACKS = "Fallbacks"
    QUOTA_REJECTIONS = "QuotaRejections"
    ERRORS = "Errors"
    GUARDRAIL_ACTIONS = "GuardrailActions"
    CACHE_HITS = "CacheHits"
    CACHE_MISSES = "CacheMisses"
    NO_CAPACITY = "NoCapacity"
    """Attempts on an inference component that had no copies (each one also counts in
    SageMaker's own ``NoCapacityInvocationFailures``, which scales the component out)."""


REQUEST_METRICS: Final = (
    Metric.REQUESTS,
    Metric.TIME_TO_FIRST_BYTE,
    Metric.UPSTREAM_TIME_TO_FIRST_BYTE,
    Metric.DURATION,
    Metric.INPUT_TOKENS,
    Metric.OUTPUT_TOKENS,
    Metric.OUTPUT_TOKENS_PER_SECOND,
)
"""Published with dimensions ``{service, route}`` and ``{service, route, backend}``."""
ROUTE_ONLY_METRICS: Final = (
    Metric.FALLBACKS,
    Metric.QUOTA_REJECTIONS,
    Metric.CACHE_HITS,
    Metric.CACHE_MISSES,
    Metric.NO_CAPACITY,
)
"""Published with ``{service, route}`` only (the cache metrics only on caching routes,
NoCapacity only when an attempt met a component without copies)."""
# Errors: ``{service, route, kind}``; GuardrailActions: ``{service, route, action}`` (action:
# a GuardrailAction). No consumer dimension anywhere: it is unbounded.
DIMENSION_SERVICE: Final = "service"
DIMENSION_ROUTE: Final = "route"
DIMENSION_BACKEND: Final = "backend"
DIMENSION_KIND: Final = "kind"
DIMENSION_ACTION: Final = "action"


class GuardrailAction(StrEnum):
    """What a guardrail did to one request (the ``action`` dimension of GuardrailActions)."""

    INPUT_BLOCKED = "input_blocked"
    OUTPUT_BLOCKED = "output_blocked"
    PASSED = "passed"
    UNAVAILABLE_BLOCKED = "unavailable_blocked"
    """The guardrail could not be reached and the route fails closed."""
    UNAVAILABLE_PASSED = "unavailable_passed"
    """The guardrail could not be reached and the route fails open."""


# --- Quota table key layout (see quota.py for the items) -------------------------------------

QUOTA_PARTITION_KEY: Final = "pk"
QUOTA_TTL_ATTRIBUTE: Final = "expires_at"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Routing table (ROUTES_ENV) --------------------------------------------------------------

StreamFormat = Literal["openai", "lmi", "tgi"]
"""How a backend streams: OpenAI chat chunks (SSE or JSON lines), LMI JSON lines, TGI SSE."""

PromptTemplate = Literal["llama2"]
"""Chat template the gateway applies for the native (prompt-in) formats."""


WEIGHT_MAX: Final = 1000
INFERENCE_COMPONENT_NAME_PATTERN: Final = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$"
"""botocore sagemaker-runtime service model, shape ``InferenceComponentHeader`` (max 63)."""
MAX_IMAGES_PER_REQUEST: Final = 64


class ImageInput(_Frozen):
    """A backend whose model takes images: OpenAI ``image_url`` content parts in user messages
    are passed to it (an ``openai``-format backend only; the model's chat template places them).
    Backends without it never receive image parts: a route skips them for such requests."""

    max_images: int = Field(
        1,
        ge=1,
        le=MAX_IMAGES_PER_REQUEST,
        description=(
            "Most images one request may carry; more is a 400. Keep it at or below what the "
            "engine accepts (vLLM: --limit-mm-per-prompt, set through engine_args)."
        ),
    )
    tokens_per_image: int = Field(
        1536,
        gt=0,
        le=65536,
        description=(
            "Prompt tokens reserved per image until the model reports the real count (it "
            "depends on the model and the image size; the default suits ~1 megapixel images "
            "on Qwen2.5-VL-style 28-pixel patches)."
        ),
    )
    remote_urls: bool = Field(
        False,
        description=(
            "Also pass http(s) image URLs, which the model container then fetches itself "
            "(impossible with network isolation; otherwise it reaches the URL from the "
            "endpoint's network). false: only data: URLs (base64 images in the request)."
        ),
    )


def check_weights(alias: str, weights: list[int | None]) -> None:
    """Weighted backends share first attempts by weight: at least one must be above 0."""
    given = [w for w in weights if w is not None]
    if given and sum(given) == 0:
        raise ValueError(
            f"route {alias!r}: the backend weights sum to 0; fix: give one a weight > 0"
        )


class Backend(_Frozen):
    """One SageMaker endpoint and how to talk to it."""

    name: str = Field(min_length=1, description="Model config name; reported to clients.")
    endpoint_name: str = Field(min_length=1, max_length=63)
    format: StreamFormat
    prompt_template: PromptTemplate | None = None
    custom_attributes: str | None = Field(None, max_length=1024)
    max_tokens_default: int = Field(gt=0, description="Output limit when a request sets none.")
    max_model_len: int | None = Field(
        None, gt=0, description="The model's context (prompt + output); bounds reservations."
    )
    weight: int | None = Field(
        None,
        ge=0,
        le=WEIGHT_MAX,
        description="Canary weight; backends with a weight share first attempts by weight.",
    )
    image_input: ImageInput | None = Field(
        None, description="Image content parts this backend takes; null: text only."
    )
    # Both left out of the serialized table when unset, so endpoint backends' tables (and the
    # templates that carry them) are unchanged.
    inference_component_name: str | None = Field(
        None,
        max_length=63,
        pattern=INFERENCE_COMPONENT_NAME_PATTERN,
        exclude_if=lambda value: value is None,
        description=(
            "The inference component to invoke on the endpoint (sent as InferenceComponentName); "
            "null: the endpoint's own model."
        ),
    )
    retry_after_s: int | None = Field(
        None,
        ge=1,
        le=3600,
        exclude_if=lambda value: value is None,
        description=(
            "Retry-After (seconds) of the 503 answered when this component has no copies and "
            "the route has no other backend to try (component backends only)."
        ),
    )

    @model_validator(mode="after")
    def _template_matches_format(self) -> Backend:
        if self.retry_after_s is not None and self.inference_component_name is None:
            raise ValueError("retry_after_s applies only to an inference component backend")
        if self.image_input is not None and self.format != "openai":
            raise ValueError(f"a {self.format}-format backend takes a plain prompt, no images")
        if self.format == "openai" and self.prompt_template is not None:
            raise ValueError("an openai-format backend applies its own chat template")
        if self.format != "openai" and self.prompt_template is None:
            raise ValueError(f"a {self.format}-format backend needs a prompt_template")
        return self


class RoutePolicy(_Frozen):
    """How a route tries its backends (the gateway config's routes extend this)."""

    first_byte_timeout_s: float = Field(
        60.0, gt=0, le=900, description="An attempt with no first token by then has failed."
    )
    max_attempts: int = Field(2, ge=1, le=5, description="Backends tried per request, at most.")
    sticky: bool = Field(
        False, description="Fix the weighted choice per consumer (hashing), e.g. for canaries."
    )


class GuardrailPolicy(_Frozen):
    """How a route applies its Amazon Bedrock guardrail (``ApplyGuardrail``)."""

    check_input: bool = Field(
        True, description="Check the prompt before the model is invoked (blocked: HTTP 400)."
    )
    check_output: bool = Field(
        True,
        description=(
            "Check the answer: streamed text is held back and released window by window after "
            "each window passes (blocked: the stream ends with finish_reason content_filter)."
        ),
    )
    window_chars: int = Field(
        400,
        ge=50,
        le=10000,
        description=(
            "Characters of answer per output check while streaming: larger windows mean fewer "
            "ApplyGuardrail calls and more held-back text (added latency)."
        ),
    )
    on_unavailable: Literal["fail_closed", "fail_open"] = Field(
        "fail_closed",
        description=(
            "When ApplyGuardrail fails: fail_closed answers 503 (input) or ends the stream "
            "with content_filter (output); fail_open serves unchecked and counts it."
        ),
    )


class GuardrailRef(GuardrailPolicy):
    """A route's guardrail as the function calls it: id and version (resolved at deploy)."""

    guardrail_id: str = Field(min_length=1, description="Guardrail id or ARN.")
    guardrail_version: str = Field(min_length=1, description="A version number or DRAFT.")


class CachePolicy(_Frozen):
    """A route's exact-match response cache (DynamoDB, ``CACHE_TABLE_ENV``)."""

    ttl_s: int = Field(3600, ge=60, le=30 * 24 * 3600, description="How long an entry lives.")
    scope: Literal["route", "consumer"] = Field(
        "consumer",
        description=(
            "route: one entry per request shared by every consumer of the route (another "
            "consumer sending the same messages gets the stored answer: share only where "
            "prompts are not private); consumer: entries per consumer."
        ),
    )
    when: Literal["deterministic", "always"] = Field(
        "deterministic",
        description=(
            "deterministic: only requests with temperature 0 or a seed are cached (an answer "
            "that should vary is not frozen); always: every request."
        ),
    )
    charge: Literal["usage", "none"] = Field(
        "usage",
        description=(
            "A hit charges the token quotas what the stored answer used (usage) or nothing."
        ),
    )


class Route(RoutePolicy):
    """A model alias clients send as ``model``, served by ordered backends.

    The first attempt goes to a backend chosen by weight among the weighted ones (or the
    first backend when none has a weight); later attempts follow the listed order.
    """

    model: str = Field(min_length=1, max_length=256)
    backends: tuple[Backend, ...] = Field(min_length=1)
    guardrail: GuardrailRef | None = Field(None, description="Content safety; null: none.")
    cache: CachePolicy | None = Field(None, description="Response cache; null: none.")

    @model_validator(mode="after")
    def _weights_make_sense(self) -> Route:
        check_weights(self.model, [b.weight for b in self.backends])
        return self


class Cooldown(_Frozen):
    """When the function stops trying a failing backend (per function instance)."""

    cooldown_failures: int = Field(
        3, ge=1, description="Consecutive failures after which a backend is cooled down."
    )
    cooldown_s: float = Field(
        30.0, ge=0, le=3600, description="How long a cooled-down backend is skipped."
    )


class RouteTable(Cooldown):
    """``ROUTES_ENV``: every route, and the cooldown."""

    routes: tuple[Route, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_aliases(self) -> RouteTable:
        seen: set[str] = set()
        for route in self.routes:
            if route.model in seen:
                raise ValueError(f"model alias {route.model!r} is routed twice")
            seen.add(route.model)
        return self

    def get(self, model: str) -> Route | None:
        return next((route for route in self.routes if route.model == model), None)


# --- Consumer table (CONSUMERS_ENV) ----------------------------------------------------------


DEFAULT_RESERVATION: Final = 1024
"""A tier's default ``default_reservation``."""


class TokenQuota(_Frozen):
    """A tier's token quotas, counted by the function (the gateway config's tiers extend it)."""

    tokens_per_day: int | None = Field(
        None, ge=1, description="Prompt + completion tokens per consumer per day; null: none."
    )
    tokens_per_month: int | None = Field(
        None, ge=1, description="Prompt + completion tokens per consumer per month; null: none."
    )
    default_reservation: int = Field(
        DEFAULT_RESERVATION,
        gt=0,
        description=(
            "Output tokens reserved against the token quotas (and allowed) when a request "
            "sets no max_tokens. The default matches a model config's default "
            "gateway.max_tokens_default."
        ),
    )


class Tier(TokenQuota):
    """A tier as the function sees it: its name and token quotas (request quotas and rates
    are API Gateway's usage plans)."""

    name: str = Field(min_length=1, max_length=64)


class Consumer(_Frozen):
    name: str = Field(min_length=1, max_length=64)
    tier: str
    routes: tuple[str, ...] | None = Field(
        None, description="Model aliases this consumer may call; None: all of them."
    )

    def may_use(self, model: str) -> bool:
        return self.routes is None or model in self.routes


class ConsumerTable(_Frozen):
    tiers: tuple[Tier, ...] = Field(min_length=1)
    consumers: dict[str, Consumer] = Field(description="API Gateway API key id → consumer.")

    @model_validator(mode="after")
    def _tiers_exist(self) -> ConsumerTable:
        names = {tier.name for tier in self.tiers}
        for consumer in self.consumers.values():
            if consumer.tier not in names:
                raise ValueError(f"consumer {consumer.name!r} has unknown tier {consumer.tier!r}")
        return self

    def tier(self, name: str) -> Tier:
        return next(tier for tier in self.tiers if tier.name == name)

    def by_name(self, name: str) -> Consumer | None:
        return next((c for c in self.consumers.values() if c.name == name), None)
