"""Model config: autoscaling bounds and how updates roll out."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from llm_serving.config.base import Strict as _Strict


class Scaling(_Strict):
    """Target tracking on SageMaker's high-resolution ConcurrentRequestsPerModel."""

    enabled: bool = Field(
        True,
        description=(
            "Register the variant with Application Auto Scaling. SageMaker refuses to change "
            "the instance type of an autoscaled variant: deploy once with false (which "
            "deregisters it), then change instance.type and set true again (README: Changing "
            "the instance type)."
        ),
    )
    min_instances: int = Field(1, ge=1, description="Fewest instances (endpoints cannot reach 0).")
    max_instances: int = Field(1, ge=1, description="Most instances; at least min_instances.")
    target_concurrent_requests_per_model: float = Field(
        8, gt=0, description="Target of ConcurrentRequestsPerModel per instance."
    )
    scale_in_cooldown_s: int = Field(
        900, ge=0, description="Seconds after a scale-in before the next one."
    )
    scale_out_cooldown_s: int = Field(
        300, ge=0, description="Seconds after a scale-out before the next one."
    )

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.max_instances < self.min_instances:
            raise ValueError(
                f"max_instances ({self.max_instances}) is below min_instances "
                f"({self.min_instances}); raise max_instances"
            )
        return self


class _DeploymentBase(_Strict):
    rollback_5xx_rate: float = Field(
        0.05, gt=0, le=1, description="Invocation5XXErrors average that triggers auto-rollback."
    )
    rollback_alarm_periods: int = Field(3, ge=1, description="Consecutive 1-minute periods.")
    max_execution_timeout_s: int = Field(
        3600, ge=600, le=14400, description="Longest the whole deployment may take, in seconds."
    )


class RollingDeployment(_DeploymentBase):
    """Replace instances in batches; needs no second fleet."""

    strategy: Literal["rolling"] = Field("rolling", description="Selects a rolling deployment.")
    batch_instances: int = Field(1, ge=1, description="Instances replaced per batch.")
    wait_interval_s: int = Field(
        300,
        ge=0,
        le=3600,
        description="Seconds each batch bakes while the rollback alarm is watched.",
    )


class BlueGreenDeployment(_DeploymentBase):
    """Stand up a full green fleet, shift traffic, bake, then retire blue (2× GPU quota)."""

    strategy: Literal["blue_green"] = Field(
        "blue_green", description="Selects a blue/green deployment."
    )
    traffic: Literal["all_at_once", "canary"] = Field(
        "all_at_once", description="Shift all traffic at once, or a canary share first."
    )
    canary_percent: int = Field(
        10,
        ge=1,
        le=50,
        description="Percent of the green fleet's capacity that gets traffic first (canary).",
    )
    wait_interval_s: int = Field(
        600,
        ge=0,
        le=3600,
        description="Seconds each traffic shift bakes while the rollback alarm is watched.",
    )
    termination_wait_s: int = Field(
        600,
        ge=0,
        le=3600,
        description="Seconds the blue fleet is kept after all traffic has shifted.",
    )


Deployment = Annotated[RollingDeployment | BlueGreenDeployment, Field(discriminator="strategy")]
