"""Typed schema for the streaming gateway (``model_configs/gateway.yaml``).

The file is optional: without it every section takes the defaults below. Like the model
schema it is frozen and ``extra="forbid"``, so a misspelt key fails synth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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

    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    read_timeout_s: float = Field(
        120.0,
        gt=0,
        le=900,
        description="Longest silence between two upstream bytes (a first token included).",
    )


class Api(_Strict):
    """The REST API's default usage plan and account-level settings."""

    throttle_rate_limit: float = Field(
        10, gt=0, description="Steady requests per second per API key (best effort)."
    )
    throttle_burst_limit: int = Field(20, ge=1, description="Burst requests per API key.")
    quota_requests_per_day: int | None = Field(
        10_000, ge=1, description="Requests per key per day; null for no quota (best effort)."
    )
    account_cloudwatch_role: bool = Field(
        True,
        description=(
            "Create API Gateway's account-wide CloudWatch Logs role (needed for execution "
            "logs). Set false if the account already has one set up elsewhere: there is one "
            "per account and region, and the last stack to set it wins."
        ),
    )


class GatewayConfig(_Strict):
    """Everything about the gateway that is not per model (routes come from the models)."""

    web_adapter: WebAdapter = Field(default_factory=WebAdapter)
    function: FunctionSettings = Field(default_factory=FunctionSettings)
    limits: Limits = Field(default_factory=Limits)
    upstream: Upstream = Field(default_factory=Upstream)
    api: Api = Field(default_factory=Api)


def parse_gateway_config(data: object, path: Path) -> GatewayConfig:
    """Validate already-loaded YAML data; ``path`` is only used in messages."""
    if data is None:  # an empty file
        return GatewayConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc, kind="gateway config")) from None


def load_gateway_config(config_dir: Path) -> GatewayConfig:
    """Read ``<config_dir>/gateway.yaml``; all defaults if the file does not exist."""
    path = config_dir / GATEWAY_FILE
    if not path.exists():
        return GatewayConfig()
    return parse_gateway_config(_read_yaml(path), path)
