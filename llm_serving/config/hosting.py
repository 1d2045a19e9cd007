"""Model config: how a model is hosted (a dedicated endpoint, or an inference component on a
shared endpoint) and how the endpoint routes requests among its instances.

Sources (checked 2026-11):

* botocore ``data/sagemaker/2017-07-24/service-2.json``: ``RoutingStrategy`` is
  ``LEAST_OUTSTANDING_REQUESTS | RANDOM | PREFIX_AWARE | KV_AWARE``; ``PrefixAwareRoutingConfig``
  ``PrefixLength`` 1024–65536 and ``ConcurrencyThreshold`` 1–1024, both "Required when
  RoutingStrategy is PREFIX_AWARE"; ``ProductionVariantManagedInstanceScaling``
  ``MinInstanceCount`` ≥ 0, ``MaxInstanceCount`` ≥ 1;
  ``InferenceComponentComputeResourceRequirements`` ``MinMemoryRequiredInMb`` ≥ 128
  (required), ``NumberOfAcceleratorDevicesRequired`` ≥ 1.
* ``InferenceComponentCopyCount`` is ≥ 0 in the model, but creating a component with
  ``CopyCount: 0`` is refused ("Inference components copy count an integer larger than 0",
  field report stdapi-ai/stdapi.ai#43, 2026-08-27): copies reach 0 only by scaling in, so
  ``copies.initial`` must be ≥ 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from llm_serving.config.base import Strict as _Strict

RoutingStrategy = Literal["least_outstanding_requests", "random", "prefix_aware"]

_ENDPOINT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


class Routing(_Strict):
    """The production variant's ``RoutingConfig``: how the endpoint picks an instance (and, on
    a shared endpoint, a component copy) for each request."""

    strategy: RoutingStrategy = Field(
        "least_outstanding_requests",
        description=(
            "least_outstanding_requests: the instance with the most spare capacity (suits LLM "
            "requests of very different lengths); random; prefix_aware: requests sharing a "
            "prompt prefix go to the same instance or copy, to reuse the engine's prefix cache "
            "(needs container.engine_args.enable-prefix-caching: true; applies only when two or "
            "more instances or copies can serve the request)."
        ),
    )
    prefix_length: int | None = Field(
        None,
        ge=1024,
        le=65536,
        description=(
            "prefix_aware only (required there): bytes from the start of the request body that "
            "decide the instance; cover the shared system prompt plus some of the user's text."
        ),
    )
    concurrency_threshold: int | None = Field(
        None,
        ge=1,
        le=1024,
        description=(
            "prefix_aware only (required there): in-flight requests on the chosen instance or "
            "copy at which the endpoint routes elsewhere; about the engine's max_num_seqs."
        ),
    )

    @model_validator(mode="after")
    def _prefix_settings(self) -> Routing:
        given = self.prefix_length is not None or self.concurrency_threshold is not None
        if self.strategy != "prefix_aware" and given:
            raise ValueError(
                "prefix_length and concurrency_threshold apply only to strategy prefix_aware; "
                "remove them or set strategy: prefix_aware"
            )
        if self.strategy == "prefix_aware" and (
            self.prefix_length is None or self.concurrency_threshold is None
        ):
            raise ValueError(
                "strategy prefix_aware needs prefix_length (1024–65536) and "
                "concurrency_threshold (1–1024); SageMaker requires both"
            )
        return self

    @property
    def cfn_strategy(self) -> str:
        """The CloudFormation ``RoutingStrategy`` value."""
        return self.strategy.upper()


class EndpointHosting(_Strict):
    """A dedicated real-time endpoint (at least one instance, always billed)."""

    mode: Literal["endpoint"] = Field("endpoint", description="Selects a dedicated endpoint.")
    routing: Routing = Field(
        default_factory=Routing, description="How the endpoint routes among its instances."
    )


class SharedEndpoint(_Strict):
    """A shared endpoint's own settings, declared once, in one of the model configs hosted on
    it (the others name it). Its instance type and host AMI are that config's ``instance``;
    every model on it must agree."""

    name: str = Field(pattern=_ENDPOINT_NAME_PATTERN, description="Lower-case id, ≤ 40 chars.")
    min_instances: int = Field(
        0,
        ge=0,
        description=(
            "ManagedInstanceScaling MinInstanceCount: 0 lets the endpoint release every "
            "instance when all its components have scaled to zero copies."
        ),
    )
    max_instances: int = Field(
        1, ge=1, description="ManagedInstanceScaling MaxInstanceCount: the most instances."
    )
    initial_instances: int = Field(
        1,
        ge=1,
        description="Instances at creation (the components' initial copies are placed on them).",
    )
    routing: Routing = Field(
        default_factory=Routing,
        description="How the endpoint routes among instances and component copies.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> SharedEndpoint:
        if not self.min_instances <= self.initial_instances <= self.max_instances:
            raise ValueError(
                f"initial_instances ({self.initial_instances}) must be within [min_instances "
                f"({self.min_instances}), max_instances ({self.max_instances})]; make them agree"
            )
        return self


class Copies(_Strict):
    """How many copies of the model the component runs."""

    min: int = Field(0, ge=0, description="Fewest copies; 0 scales to zero when idle.")
    max: int = Field(1, ge=1, description="Most copies.")
    initial: int = Field(
        1,
        ge=0,
        description=(
            "Copies at creation. SageMaker refuses CopyCount 0 at creation, so at least 1: a "
            "deploy starts (and bills) a copy until the idle time has passed."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> Copies:
        if self.initial < 1:
            raise ValueError(
                "copies.initial is 0, but SageMaker refuses an inference component created "
                'with CopyCount 0 ("Inference components copy count an integer larger than '
                '0", field report stdapi-ai/stdapi.ai#43); fix: set copies.initial: 1 and '
                "copies.min: 0, so the copy is scaled in to zero once idle"
            )
        if self.max < self.min or not self.min <= self.initial <= self.max:
            raise ValueError(
                f"copies need min ({self.min}) ≤ initial ({self.initial}) ≤ max ({self.max}); "
                "make them agree"
            )
        return self


class ComponentHosting(_Strict):
    """An inference component on a shared endpoint with managed instance scaling: copies scale
    with concurrency, to zero when idle, and back out when a request finds no copy."""

    mode: Literal["component"] = Field(description="Selects an inference component.")
    endpoint: SharedEndpoint | str = Field(
        description=(
            "The shared endpoint: its settings (in exactly one of the model configs on it), or "
            "its name (in the others)."
        )
    )
    copies: Copies = Field(default_factory=Copies, description="Copy-count bounds.")
    accelerators_per_copy: int = Field(
        1,
        ge=1,
        description=(
            "GPUs each copy reserves (NumberOfAcceleratorDevicesRequired); at least "
            "container.tensor_parallel_degree, at most the instance's GPUs."
        ),
    )
    memory_per_copy_mb: int = Field(
        1024,
        ge=128,
        description=(
            "Host memory each copy reserves (MinMemoryRequiredInMb): a scheduling reservation, "
            "not a limit. Field reports: the schedulable pool is much smaller than the "
            "instance's memory (1024 accepted, 4096 refused on ml.g5.xlarge)."
        ),
    )
    target_concurrent_requests_per_copy: float = Field(
        4,
        gt=0,
        description="Target of ConcurrentRequestsPerCopy (high resolution) for copy scaling.",
    )
    scale_in_cooldown_s: int = Field(
        300, ge=0, description="Seconds after a copy scale-in before the next one."
    )
    scale_out_cooldown_s: int = Field(
        60, ge=0, description="Seconds after a copy scale-out before the next one."
    )
    idle_minutes_to_zero: int | None = Field(
        15,
        ge=1,
        le=1440,
        description=(
            "With copies.min 0: minutes without invocations after which the copies are set to "
            "0 (a CloudWatch alarm and a step-scaling policy). null: only target tracking "
            "scales in (on its own schedule)."
        ),
    )
    retry_after_s: int = Field(
        300,
        ge=1,
        le=3600,
        description=(
            "Retry-After of the gateway's 503 while the model starts from zero (AWS: "
            "provisioning takes several minutes; a field report measured about 9 minutes "
            "from the first request to an answer)."
        ),
    )

    @property
    def endpoint_name(self) -> str:
        """The shared endpoint's name, declared here or referenced."""
        return self.endpoint if isinstance(self.endpoint, str) else self.endpoint.name

    @property
    def declaration(self) -> SharedEndpoint | None:
        return self.endpoint if isinstance(self.endpoint, SharedEndpoint) else None

    @model_validator(mode="after")
    def _idle_needs_zero(self) -> ComponentHosting:
        given = "idle_minutes_to_zero" in self.model_fields_set
        if self.copies.min > 0 and given and self.idle_minutes_to_zero is not None:
            raise ValueError(
                "idle_minutes_to_zero scales copies to 0 but copies.min is "
                f"{self.copies.min}; set copies.min: 0 or remove idle_minutes_to_zero"
            )
        return self

    @property
    def scales_to_zero(self) -> bool:
        return self.copies.min == 0


Hosting = Annotated[EndpointHosting | ComponentHosting, Field(discriminator="mode")]
