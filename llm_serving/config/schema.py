"""Typed schema for one model deployment (``model_configs/<name>.yaml``).

Parsed once; the same objects drive the CloudFormation properties and, later, the gateway's
routing table. Every model is ``extra="forbid"`` and frozen, so a misspelt key fails synth
instead of being silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, cast

from pydantic import Field, model_validator

from llm_gateway.contract import ImageInput, PromptTemplate, StreamFormat
from llm_serving.config.amis import InferenceAmiVersion
from llm_serving.config.base import Strict as _Strict
from llm_serving.config.containers import (
    LMI_MODEL_LOADING_TIMEOUT_S,
    Container,
    EngineArgValue,
    LmiContainer,
    TgiContainer,
    VllmContainer,
)
from llm_serving.config.hosting import (
    ComponentHosting,
    Copies,
    EndpointHosting,
    Hosting,
    Routing,
    SharedEndpoint,
)
from llm_serving.config.rollout import (
    BlueGreenDeployment,
    Deployment,
    RollingDeployment,
    Scaling,
)

__all__ = [
    "BYTES_PER_PARAMETER",
    "FORMATS_BY_FAMILY",
    "LMI_MODEL_LOADING_TIMEOUT_S",
    "Architecture",
    "BlueGreenDeployment",
    "ComponentHosting",
    "Container",
    "Copies",
    "Deployment",
    "Dtype",
    "EndpointHosting",
    "EndpointMetrics",
    "EngineArgValue",
    "GatewayOptions",
    "Hosting",
    "HubWeights",
    "Instance",
    "License",
    "LmiContainer",
    "ModelConfig",
    "RollingDeployment",
    "Routing",
    "S3Weights",
    "Scaling",
    "SharedEndpoint",
    "StreamFormat",
    "TgiContainer",
    "VllmContainer",
    "Weights",
]

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]

BYTES_PER_PARAMETER: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


class Architecture(_Strict):
    """What the GPU fit check needs to know about the network."""

    parameters_billion: float = Field(gt=0, description="Parameter count in billions.")
    dtype: Dtype = Field("bf16", description="Weight precision as served.")
    num_layers: int = Field(gt=0, description="Transformer layers (config.json num_hidden_layers).")
    num_kv_heads: int = Field(gt=0, description="Key/value heads (num_key_value_heads).")
    head_dim: int = Field(
        gt=0, description="Per-head dimension (hidden_size / num_attention_heads)."
    )
    kv_cache_dtype: Dtype | None = Field(None, description="KV cache precision; defaults to dtype.")


class HubWeights(_Strict):
    """Weights downloaded by the container from the Hugging Face Hub at start-up."""

    source: Literal["hub"] = Field("hub", description="Selects Hugging Face Hub weights.")
    hub_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="Hub repository, org/name.")
    revision: str | None = Field(None, description="Commit or tag to pin; recommended for prod.")
    token_secret_name: str | None = Field(
        None,
        description=(
            "Name of a Secrets Manager secret holding a Hugging Face token (gated models). "
            "Only the name is configured; CloudFormation resolves the value at deploy time."
        ),
    )


class S3Weights(_Strict):
    """Uncompressed weights under a prefix of the artifact bucket."""

    source: Literal["s3"] = Field("s3", description="Selects weights in the artifact bucket.")
    prefix: str = Field(
        pattern=r"^[A-Za-z0-9!_.*'()/-]+/$",
        description="Key prefix in the artifact bucket, ending with '/'.",
    )


Weights = Annotated[HubWeights | S3Weights, Field(discriminator="source")]


class Instance(_Strict):
    """The production variant's hardware and start-up budget."""

    type: str = Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$", description="e.g. ml.g5.2xlarge")
    initial_count: int = Field(
        1, ge=1, description="Instances at creation; within the scaling bounds."
    )
    inference_ami_version: InferenceAmiVersion | None = Field(
        None,
        description=(
            "Host AMI (NVIDIA driver and CUDA version). Its CUDA major version must equal the "
            "image's (the tag's -cuNNN): gpu-2/2-1/3-1 run CUDA 12 images, "
            "al2023-ami-sagemaker-inference-gpu-4-1 CUDA 13 images. null: the newest-driver "
            "AMI for the image's CUDA major version."
        ),
    )
    volume_size_gb: int | None = Field(
        None, ge=1, le=512, description="EBS volume; only for instance types without NVMe storage."
    )
    model_data_download_timeout_s: int = Field(
        1200, ge=60, le=3600, description="Time allowed to download the model data, in seconds."
    )
    container_startup_health_check_timeout_s: int = Field(
        1200,
        ge=60,
        le=3600,
        description="Time allowed for the container to pass its first health check, in seconds.",
    )
    network_isolation: bool | None = Field(
        None,
        description=(
            "EnableNetworkIsolation: the container makes no network calls (SageMaker still "
            "downloads the model data). null = automatic: on when the container can load S3 "
            "weights without the network (vLLM/TGI with weights.source s3), off otherwise. true "
            "needs such a model (not Hub weights, not LMI, which downloads its S3 model_id "
            "itself); false turns it off explicitly."
        ),
    )


class License(_Strict):
    """A model licence the deployer must accept explicitly (e.g. the Meta Llama 2 licence).

    A synth-time acknowledgement only: nothing is sent to the endpoint. For Hugging Face Hub
    weights the real gate is the Hub: the account whose token is in
    ``weights.token_secret_name`` must have accepted the licence on the model's page.
    (``accept_eula=true`` as InvokeEndpoint CustomAttributes is a JumpStart convention; the
    DJL-LMI container turns custom attributes into request properties that no handler reads:
    djl-serving ``serving/src/main/java/ai/djl/serving/http/RequestParser.java``.)
    """

    name: str = Field(description="The licence's name, used in messages.")
    url: str = Field(pattern=r"^https://", description="Where the licence can be read.")
    accept_eula: bool = Field(
        description=(
            "Must be true to deploy: you have read and accepted the licence. Not sent to the "
            "endpoint; for Hub weights accept it on the model's Hub page with the token's "
            "account."
        ),
        json_schema_extra={"const": True},
    )

    @model_validator(mode="after")
    def _accepted(self) -> License:
        if not self.accept_eula:
            raise ValueError(
                f"the {self.name} licence is not accepted; read {self.url} and set "
                "license.accept_eula: true, or remove the model"
            )
        return self


# Which stream formats each container family can produce through /invocations.
FORMATS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "vllm": ("openai",),
    "lmi": ("openai", "lmi"),
    "tgi": ("tgi", "openai"),
}


class GatewayOptions(_Strict):
    """How the streaming gateway talks to this model's endpoint."""

    stream_format: StreamFormat | None = Field(
        None,
        description=(
            "openai: send `messages`, receive chat.completion.chunk (vLLM, LMI chat); "
            "lmi: send a prompt, receive LMI JSON lines; tgi: send a prompt, receive TGI SSE. "
            "Defaults to the container family's first format (vllm/lmi: openai, tgi: tgi)."
        ),
    )
    prompt_template: PromptTemplate | None = Field(
        None, description="Chat template the gateway applies for the lmi and tgi formats."
    )
    max_tokens_default: int = Field(
        1024, gt=0, description="Output token limit when a request sets none."
    )
    custom_attributes: str | None = Field(
        None,
        max_length=1024,
        description=(
            "Sent as InvokeEndpoint CustomAttributes on every request (e.g. accept_eula=true "
            "for a JumpStart model package). The vLLM, LMI and TGI containers configured here "
            "read none."
        ),
    )
    image_input: ImageInput | None = Field(
        None,
        description=(
            "Declare that the model takes images (a vision-language model on the openai "
            "format): image_url parts are passed to it. null: text only, and requests with "
            "images skip this backend."
        ),
    )


MetricPublishFrequency = Literal[10, 30, 60, 120, 180, 240, 300]


class EndpointMetrics(_Strict):
    """The endpoint config's ``MetricsConfig`` (CloudFormation ``AWS::SageMaker::EndpointConfig``).

    All defaults leave ``MetricsConfig`` out of the template, i.e. SageMaker's defaults. It is
    create-only: changing it replaces the endpoint config, which the endpoint then deploys
    (rolling or blue/green, like any config change).
    """

    enhanced: bool = Field(
        False,
        description=(
            "EnableEnhancedMetrics: also publish utilization and invocation metrics per "
            "instance (InstanceId) and GPU metrics per GPU (AcceleratorId). SageMaker's "
            "default is off."
        ),
    )
    detailed_observability: bool | None = Field(
        None,
        description=(
            "EnableDetailedObservability: the AWS-managed collector's per-GPU, host and "
            "container (Prometheus) metrics, queried with PromQL. null: SageMaker's default "
            "(on for endpoint configs created since 2026-06-17); false turns it off."
        ),
    )
    publish_frequency_s: MetricPublishFrequency | None = Field(
        None,
        description=(
            "MetricPublishFrequencyInSeconds (SageMaker's default 60): utilization metrics, "
            "and invocation metrics too when enhanced."
        ),
    )

    @property
    def is_default(self) -> bool:
        """True when nothing is set, so the template has no ``MetricsConfig``."""
        return (
            not self.enhanced
            and self.detailed_observability is None
            and self.publish_frequency_s is None
        )


class ModelConfig(_Strict):
    """One model deployment: weights, container, instance, scaling, deployment policy."""

    name: str = Field(pattern=_NAME_PATTERN, description="Lower-case id, ≤ 40 chars.")
    description: str = Field("", description="Free text for people; not deployed.")
    architecture: Architecture = Field(description="The network, for the GPU fit check.")
    container: Container = Field(description="Serving container, selected by family.")
    weights: Weights = Field(description="Where the weights come from, selected by source.")
    instance: Instance = Field(description="Instance type and start-up budget.")
    scaling: Scaling = Field(default_factory=Scaling, description="Autoscaling bounds and target.")
    deployment: Deployment | None = Field(
        None,
        description=(
            "How updates roll out, selected by strategy. null: rolling, one batch within "
            "SageMaker's 5–50 % limit, when scaling.min_instances allows one (≥ 2), else "
            "blue/green all at once (needs spare GPU quota for a second fleet while it runs)."
        ),
    )
    license: License | None = Field(
        None, description="A licence that must be accepted (gated models); null: none."
    )
    gateway: GatewayOptions = Field(
        default_factory=GatewayOptions, description="How the streaming gateway talks to it."
    )
    metrics: EndpointMetrics = Field(
        default_factory=EndpointMetrics, description="The endpoint config's MetricsConfig."
    )
    hosting: Hosting = Field(
        default_factory=EndpointHosting,
        description=(
            "endpoint (default): a dedicated endpoint; component: an inference component on a "
            "shared endpoint that can scale to zero (README: Choosing a hosting mode)."
        ),
    )

    @model_validator(mode="after")
    def _component_settings(self) -> ModelConfig:
        """A component's endpoint is shared: the per-endpoint sections do not apply to it."""
        if not isinstance(self.hosting, ComponentHosting):
            return self
        misplaced = {
            "scaling": "hosting.copies and hosting.target_concurrent_requests_per_copy",
            "deployment": "nothing (components roll out with SageMaker's defaults)",
            "metrics": "nothing (the shared endpoint keeps SageMaker's defaults)",
        }
        for field, instead in misplaced.items():
            if field in self.model_fields_set:
                raise ValueError(
                    f"{field} applies to hosting.mode endpoint; an inference component uses "
                    f"{instead}: remove {field}"
                )
        if "initial_count" in self.instance.model_fields_set:
            raise ValueError(
                "instance.initial_count applies to hosting.mode endpoint; a shared endpoint's "
                "instances are hosting.endpoint.initial_instances: remove it"
            )
        return self

    @model_validator(mode="after")
    def _prefix_aware_needs_cache(self) -> ModelConfig:
        routing = self.routing
        if routing is not None and routing.strategy == "prefix_aware":
            check_prefix_caching(self, "hosting.routing.strategy")
        return self

    @property
    def routing(self) -> Routing | None:
        """The routing this config declares: its endpoint's, or its shared endpoint's when the
        declaration is here; None when it names a shared endpoint declared elsewhere."""
        if isinstance(self.hosting, EndpointHosting):
            return self.hosting.routing
        declaration = self.hosting.declaration
        return declaration.routing if declaration is not None else None

    @property
    def prefix_caching(self) -> bool:
        """The engine caches prompt prefixes: vLLM with ``enable-prefix-caching: true`` in
        ``container.engine_args``. Only the explicit flag counts (vLLM's default has changed
        between versions; not relied on)."""
        container = self.container
        return (
            isinstance(container, VllmContainer)
            and container.engine_args.get("enable-prefix-caching") is True
        )

    @model_validator(mode="after")
    def _gateway_matches_container(self) -> ModelConfig:
        family = self.container.family
        fmt = self.gateway.stream_format
        allowed = FORMATS_BY_FAMILY[family]
        if fmt is not None and fmt not in allowed:
            raise ValueError(
                f"gateway.stream_format {fmt!r} is not produced by the {family} container; "
                f"use one of {list(allowed)}"
            )
        native = self.stream_format != "openai"
        if native and self.gateway.prompt_template is None:
            raise ValueError(
                f"gateway.stream_format {self.stream_format!r} sends a raw prompt; "
                "set gateway.prompt_template (e.g. llama2)"
            )
        if native and self.gateway.image_input is not None:
            raise ValueError(
                f"gateway.image_input needs the openai stream format (the model's own chat "
                f"template places the images); {self.stream_format!r} sends a plain prompt: "
                "remove image_input or use stream_format openai"
            )
        self._image_limit_agrees()
        if not native and self.gateway.prompt_template is not None:
            raise ValueError(
                "gateway.prompt_template applies only to the lmi and tgi formats; the openai "
                "format uses the model's own chat template: remove it"
            )
        if self.gateway.max_tokens_default >= self.container.max_model_len:
            raise ValueError(
                f"gateway.max_tokens_default ({self.gateway.max_tokens_default}) leaves no room "
                f"for a prompt within max_model_len ({self.container.max_model_len}); lower it"
            )
        return self

    def _image_limit_agrees(self) -> None:
        """vLLM refuses a prompt with more images than ``--limit-mm-per-prompt`` allows; the
        gateway's ``max_images`` must not promise more (vLLM docs, "Conserving memory")."""
        accepts = self.gateway.image_input
        container = self.container
        if accepts is None or not isinstance(container, VllmContainer):
            return
        raw = container.engine_args.get("limit-mm-per-prompt")
        if raw is None:
            return
        try:
            limits = json.loads(str(raw))
        except ValueError:
            limits = None
        if not isinstance(limits, dict):
            raise ValueError(
                "container.engine_args.limit-mm-per-prompt must be a JSON object such as "
                f"'{{\"image\": {accepts.max_images}}}' (got {raw!r})"
            )
        allowed = limits.get("image", 0)
        if not isinstance(allowed, int) or allowed < accepts.max_images:
            raise ValueError(
                f"gateway.image_input.max_images lets {accepts.max_images} images through but "
                f"vLLM's limit-mm-per-prompt takes {allowed}; fix: lower max_images or raise "
                "the image limit in container.engine_args.limit-mm-per-prompt"
            )

    @property
    def stream_format(self) -> StreamFormat:
        """The format the gateway uses with this endpoint (configured or the family default)."""
        if self.gateway.stream_format is not None:
            return self.gateway.stream_format
        return cast(StreamFormat, FORMATS_BY_FAMILY[self.container.family][0])

    @model_validator(mode="after")
    def _network_isolation_possible(self) -> ModelConfig:
        """An isolated container has no network: it cannot download its own weights."""
        if self.instance.network_isolation is not True:
            return self
        if isinstance(self.weights, HubWeights):
            raise ValueError(
                "instance.network_isolation is true but the container downloads weights.source "
                "hub from the Hugging Face Hub, which needs the network; fix: copy the weights "
                "to the artifact bucket and use weights.source: s3, or remove "
                "instance.network_isolation (automatic) or set it to false"
            )
        if isinstance(self.container, LmiContainer):
            raise ValueError(
                "instance.network_isolation is true but the LMI container downloads its S3 "
                "model_id itself, with the execution role, over the network; fix: serve the S3 "
                "weights with container.family vllm or tgi, or remove "
                "instance.network_isolation (automatic) or set it to false"
            )
        return self

    @model_validator(mode="after")
    def _scaling_starts_in_bounds(self) -> ModelConfig:
        count = self.instance.initial_count
        if not self.scaling.min_instances <= count <= self.scaling.max_instances:
            raise ValueError(
                f"instance.initial_count ({count}) is outside scaling bounds "
                f"[{self.scaling.min_instances}, {self.scaling.max_instances}]; "
                "make them agree"
            )
        return self

    @property
    def custom_attributes(self) -> str | None:
        """The InvokeEndpoint CustomAttributes to send, if configured."""
        return self.gateway.custom_attributes


def check_prefix_caching(config: ModelConfig, field: str) -> None:
    """Prefix-aware routing only pays when the engine reuses cached prefixes."""
    if not config.prefix_caching:
        raise ValueError(
            f"{field}: prefix_aware routing sends requests with the same prompt prefix to the "
            "same instance so that the engine's prefix cache is reused, but this model's engine "
            "has prefix caching off; fix: set container.engine_args.enable-prefix-caching: true "
            "(vLLM), or use strategy least_outstanding_requests"
        )
