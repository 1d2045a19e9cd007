"""What SageMaker or the container would reject 20 minutes into a deploy, checked at synth.

:func:`plan_deployment` resolves a :class:`ModelConfig` into the facts the endpoint construct
deploys (pinned image, host AMI, GPU fit, deployment policy) and raises
:class:`DeployRuleError` naming the config field and the fix for the first rule broken. The
loader prefixes the file name; :class:`~llm_serving.endpoint.LlmEndpoint` the model name.
Each rule cites its source next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llm_serving.config.amis import HostAmi, HostAmiError, check_host_ami, default_host_ami
from llm_serving.config.gpus import FitReport, GpuFitError, UnknownInstanceTypeError, check_fit
from llm_serving.config.images import ImageSpec, UnknownImageError, image_spec
from llm_serving.config.schema import (
    BlueGreenDeployment,
    Deployment,
    HubWeights,
    LmiContainer,
    ModelConfig,
    RollingDeployment,
    Scaling,
)


class DeployRuleError(ValueError):
    """A config that synthesizes but would fail on AWS; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def located(self, where: str) -> str:
        """``<where>: <field>: <message>``."""
        return f"{where}: {self.field}: {self}"


@dataclass(frozen=True)
class DeployPlan:
    """The checked, resolved facts one endpoint is deployed with."""

    image: ImageSpec
    host_ami: HostAmi
    fit: FitReport
    deployment: Deployment


def plan_deployment(config: ModelConfig) -> DeployPlan:
    """Check every deploy rule and resolve the defaults that depend on them."""
    image = _image(config)
    host_ami = _host_ami(config, image)
    fit = _fit(config)
    _check_dtype(config, fit)
    _check_lmi(config, image)
    _check_license(config)
    return DeployPlan(
        image=image, host_ami=host_ami, fit=fit, deployment=resolve_deployment(config)
    )


def _image(config: ModelConfig) -> ImageSpec:
    container = config.container
    try:
        return image_spec(container.family, container.image_version)
    except UnknownImageError as exc:
        raise DeployRuleError("container.image_version", str(exc)) from None


def _host_ami(config: ModelConfig, image: ImageSpec) -> HostAmi:
    """Image CUDA vs host driver: ``llm_serving/config/amis.py`` has the table and sources."""
    configured = config.instance.inference_ami_version
    try:
        if configured is None:
            return default_host_ami(image.cuda)
        return check_host_ami(configured, image.cuda, image.name)
    except HostAmiError as exc:
        raise DeployRuleError("instance.inference_ami_version", str(exc)) from None


def _fit(config: ModelConfig) -> FitReport:
    try:
        return check_fit(config)
    except (UnknownInstanceTypeError, GpuFitError) as exc:
        raise DeployRuleError("instance.type", str(exc)) from None


def _check_dtype(config: ModelConfig, fit: FitReport) -> None:
    """bf16 needs compute capability ≥ 8.0 (``InstanceGpus.bf16`` cites vLLM's check)."""
    arch = config.architecture
    for field, dtype in (
        ("architecture.dtype", arch.dtype),
        ("architecture.kv_cache_dtype", arch.kv_cache_dtype),
    ):
        if dtype == "bf16" and not fit.gpus.bf16:
            raise DeployRuleError(
                field,
                f"bf16 needs a GPU with compute capability ≥ 8.0, but {config.instance.type} "
                f"has {fit.gpus.gpu} GPUs (vLLM refuses bfloat16 there); fix: set {field}: "
                "fp16, or choose an Ampere or later instance type (g5, g6, g6e, p4d, p5)",
            )


# djl-serving serving/docs/lmi/announcements/breaking_changes.md, "LMI Container v15
# (0.33.0)": "We have removed the sequence scheduler and lmi dist rolling batch
# implementations in this release".
_LMI_DIST_REMOVED_IN = (0, 33)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _check_lmi(config: ModelConfig, image: ImageSpec) -> None:
    container = config.container
    if not isinstance(container, LmiContainer):
        return
    if container.rolling_batch == "lmi-dist" and _version(image.version) >= _LMI_DIST_REMOVED_IN:
        raise DeployRuleError(
            "container.rolling_batch",
            f"lmi-dist was removed in LMI 0.33 (v15) and the image is {image.version}; "
            "fix: use rolling_batch: vllm",
        )
    # djl-serving serving/docs/lmi/deployment_guide/configurations.md, option.
    # model_loading_timeout: "On SageMaker, if you set this value, you should also set
    # container_startup_health_check_timeout=<at least model loading timeout>".
    health = config.instance.container_startup_health_check_timeout_s
    if health < container.model_loading_timeout_s:
        raise DeployRuleError(
            "instance.container_startup_health_check_timeout_s",
            f"{health} s is shorter than LMI's model loading timeout "
            f"({container.model_loading_timeout_s} s, container.model_loading_timeout_s): "
            "SageMaker would stop the container while the model is still loading; fix: raise "
            f"it to at least {container.model_loading_timeout_s}, or lower "
            "container.model_loading_timeout_s",
        )


def _check_license(config: ModelConfig) -> None:
    """A licensed Hub model is gated: the Hub serves it only to an account that accepted the
    licence, so the container needs that account's token."""
    weights = config.weights
    licensed = config.license is not None
    if licensed and isinstance(weights, HubWeights) and weights.token_secret_name is None:
        raise DeployRuleError(
            "weights.token_secret_name",
            f"{weights.hub_id} is licensed: the Hub serves its weights only with the token of "
            "an account that accepted the licence on the model page; fix: store that token in "
            "Secrets Manager and name the secret here, or use S3 weights",
        )


# --- Deployment policy ---------------------------------------------------------------------

# RollingUpdatePolicy.MaximumBatchSize (and RollbackMaximumBatchSize): "Value must be between
# 5% to 50% of the variant's total instance count." (botocore sagemaker/2017-07-24
# service-2.json, shape RollingUpdatePolicy; API_RollingUpdatePolicy.html).
ROLLING_BATCH_MIN_SHARE = 0.05
ROLLING_BATCH_MAX_SHARE = 0.50


def rolling_batch_range(scaling: Scaling) -> tuple[int, int]:
    """Batch sizes (instances) valid at every instance count autoscaling may leave the
    variant at, ``[min_instances, max_instances]``; empty when ``low > high``."""
    low = max(1, math.ceil(ROLLING_BATCH_MIN_SHARE * scaling.max_instances))
    high = math.floor(ROLLING_BATCH_MAX_SHARE * scaling.min_instances)
    return low, high


def resolve_deployment(config: ModelConfig) -> Deployment:
    """The configured policy, checked; or the default: rolling with the smallest valid batch
    when one exists, else blue/green all at once (SageMaker's own default strategy when an
    update has no policy, API_DeploymentConfig.html, here with the rollback alarm)."""
    low, high = rolling_batch_range(config.scaling)
    deployment = config.deployment
    if deployment is None:
        if low <= high:
            return RollingDeployment(strategy="rolling", batch_instances=low)
        return BlueGreenDeployment(strategy="blue_green")
    if isinstance(deployment, RollingDeployment):
        _check_rolling_batch(config, deployment.batch_instances, low, high)
    return deployment


def _check_rolling_batch(config: ModelConfig, batch: int, low: int, high: int) -> None:
    scaling = config.scaling
    counts = (
        f"{scaling.min_instances}"
        if scaling.min_instances == scaling.max_instances
        else f"{scaling.min_instances}–{scaling.max_instances}"
    )
    rule = (
        f"SageMaker requires a rolling batch of 5–50 % of the variant's instances "
        f"(RollingUpdatePolicy.MaximumBatchSize) and this variant runs {counts} instance(s)"
    )
    if low > high:
        raise DeployRuleError(
            "deployment.strategy",
            f"{rule}, so no batch size is valid; fix: use strategy: blue_green, omit "
            "deployment for the default, or raise scaling.min_instances to at least "
            f"{2 * low}",
        )
    if not low <= batch <= high:
        valid = f"{low}" if low == high else f"{low}–{high}"
        raise DeployRuleError(
            "deployment.batch_instances",
            f"{batch} instance(s) per batch is outside the valid range: {rule}; fix: set "
            f"batch_instances to {valid}",
        )
