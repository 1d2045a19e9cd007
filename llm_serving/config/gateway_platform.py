"""Gateway config sections about where and how the gateway runs: the Web Adapter layer, the
function, request limits, upstream timeouts and account-level API settings."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from llm_serving.config.loader import ConfigError

GATEWAY_FILE = "gateway.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        256,
        ge=128,
        le=10240,
        description=(
            "Lambda memory (CPU scales with it: 1769 MB = one vCPU), 128–10240 MB. Each stream "
            "holds one execution environment and is billed for its whole duration, so this is "
            "the gateway's cost per stream-hour. 256 MB: room for the process (about 70 MiB "
            "measured) and 1/7 of a vCPU, which the relay needs only a few per cent of "
            "(docs/benchmarks.md#cost-model)."
        ),
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
        False,
        description=(
            "Set API Gateway's account-wide CloudWatch Logs role, which execution logs need. "
            "There is one per account and region (the last stack to set it wins), so this "
            "is opt-in: leave it false where the account has one (deploying the API fails "
            "where it has none). The shipped gateway.yaml sets it true."
        ),
    )
    cors_origins: tuple[
        Annotated[str, StringConstraints(pattern=r"^(\*|https?://[A-Za-z0-9.-]+(:\d+)?)$")], ...
    ] = Field(
        (),
        description=(
            "Browser origins (scheme://host[:port], or * for any) allowed to call the API "
            "directly: API Gateway answers the CORS preflight, the function adds the headers "
            "for these origins, and API Gateway's own error responses carry "
            "Access-Control-Allow-Origin: * (they hold no data). Empty: CORS off."
        ),
    )
    authorizer_cache_s: int = Field(
        300,
        ge=0,
        le=3600,
        description=(
            "How long API Gateway caches the key authorizer's answer per Authorization header "
            "(its default 300; at most 3600). With caching, API Gateway requires every identity "
            "source to be present and answers 401 without calling the authorizer otherwise, so "
            "only `Authorization: Bearer <key>` is accepted; 0 turns caching off and also "
            "accepts `x-api-key`, at the cost of one authorizer call per request."
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
