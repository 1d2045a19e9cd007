"""Container environment per family, from a :class:`ModelConfig`.

Pure functions: values that are only known at deploy time (the S3 weights URI, the Hugging
Face token's dynamic reference) are passed in as strings (CDK tokens at synth).
"""

from __future__ import annotations

from llm_serving.config.schema import (
    EngineArgValue,
    HubWeights,
    LmiContainer,
    ModelConfig,
    TgiContainer,
    VllmContainer,
)

MODEL_DIR = "/opt/ml/model"
_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _flag_env(prefix: str, name: str, value: EngineArgValue) -> dict[str, str]:
    """SM_VLLM_<FLAG>: booleans follow the container's shell convention (true → bare flag,
    false → omitted)."""
    key = prefix + name.replace("-", "_").upper()
    if isinstance(value, bool):
        return {key: "true"} if value else {}
    return {key: str(value)}


def vllm_env(
    config: ModelConfig, container: VllmContainer, s3_weights_uri: str | None
) -> dict[str, str]:
    weights = config.weights
    args: dict[str, EngineArgValue] = {
        "model": weights.hub_id if isinstance(weights, HubWeights) else MODEL_DIR,
        "served-model-name": config.name,
        "tensor-parallel-size": container.tensor_parallel_degree,
        "max-model-len": container.max_model_len,
        "gpu-memory-utilization": container.gpu_memory_utilization,
    }
    if isinstance(weights, HubWeights) and weights.revision:
        args["revision"] = weights.revision
    if config.architecture.dtype in _VLLM_DTYPES:
        args["dtype"] = _VLLM_DTYPES[config.architecture.dtype]
    if container.reasoning_parser:
        args["reasoning-parser"] = container.reasoning_parser
    if container.max_num_seqs:
        args["max-num-seqs"] = container.max_num_seqs
    if container.tool_calling is not None:
        args["enable-auto-tool-choice"] = True
        args["tool-call-parser"] = container.tool_calling.parser
        if container.tool_calling.chat_template is not None:
            args["chat-template"] = container.tool_calling.chat_template
    args.update(container.engine_args)
    env: dict[str, str] = {}
    for name, value in args.items():
        env.update(_flag_env("SM_VLLM_", name, value))
    return env


def lmi_env(
    config: ModelConfig, container: LmiContainer, s3_weights_uri: str | None
) -> dict[str, str]:
    # Everything static lives in serving.properties; only deploy-time values go here.
    return {"OPTION_MODEL_ID": s3_weights_uri} if s3_weights_uri else {}


def tgi_env(
    config: ModelConfig, container: TgiContainer, s3_weights_uri: str | None
) -> dict[str, str]:
    weights = config.weights
    env = {
        "HF_MODEL_ID": weights.hub_id if isinstance(weights, HubWeights) else MODEL_DIR,
        "SM_NUM_GPUS": str(container.tensor_parallel_degree),
        "MAX_INPUT_LENGTH": str(container.max_input_length),
        "MAX_TOTAL_TOKENS": str(container.max_model_len),
        "CUDA_MEMORY_FRACTION": str(container.gpu_memory_utilization),
    }
    if isinstance(weights, HubWeights) and weights.revision:
        env["HF_MODEL_REVISION"] = weights.revision
    return env


def container_env(
    config: ModelConfig, *, s3_weights_uri: str | None = None, hf_token: str | None = None
) -> dict[str, str]:
    """The model container's environment. ``hf_token`` should be a dynamic reference, never
    a literal token."""
    container = config.container
    if isinstance(container, VllmContainer):
        env = vllm_env(config, container, s3_weights_uri)
    elif isinstance(container, LmiContainer):
        env = lmi_env(config, container, s3_weights_uri)
    else:
        env = tgi_env(config, container, s3_weights_uri)
    if hf_token is not None:
        env["HF_TOKEN"] = hf_token
    return env
