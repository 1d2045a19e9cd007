"""Typed configuration for model deployments (no CDK imports: the gateway runtime reuses it)."""

from llm_serving.config.gateway import (
    GatewayConfig,
    load_gateway_config,
    parse_gateway_config,
)
from llm_serving.config.gpus import (
    INSTANCE_GPUS,
    FitReport,
    GpuFitError,
    InstanceGpus,
    check_fit,
    fit_report,
    instance_gpus,
)
from llm_serving.config.images import ImageSpec, UnknownImageError, image_spec, image_versions
from llm_serving.config.loader import (
    ConfigError,
    load_model_config,
    load_model_configs,
    parse_model_config,
)
from llm_serving.config.schema import (
    Architecture,
    BlueGreenDeployment,
    HubWeights,
    Instance,
    License,
    LmiContainer,
    ModelConfig,
    RollingDeployment,
    S3Weights,
    Scaling,
    TgiContainer,
    VllmContainer,
)

__all__ = [
    "INSTANCE_GPUS",
    "Architecture",
    "BlueGreenDeployment",
    "ConfigError",
    "FitReport",
    "GatewayConfig",
    "GpuFitError",
    "HubWeights",
    "ImageSpec",
    "Instance",
    "InstanceGpus",
    "License",
    "LmiContainer",
    "ModelConfig",
    "RollingDeployment",
    "S3Weights",
    "Scaling",
    "TgiContainer",
    "UnknownImageError",
    "VllmContainer",
    "check_fit",
    "fit_report",
    "image_spec",
    "image_versions",
    "instance_gpus",
    "load_gateway_config",
    "load_model_config",
    "load_model_configs",
    "parse_gateway_config",
    "parse_model_config",
]
