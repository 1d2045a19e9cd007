"""Model config: the serving container, selected by ``family`` (vLLM, DJL-LMI, TGI)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from llm_serving.config.base import Strict as _Strict

EngineArgValue = str | int | float | bool

_ENGINE_ARG_PATTERN = r"^[a-z0-9][a-z0-9-]*$"


class _ContainerBase(_Strict):
    image_version: str = Field(description="Version key into the pinned image catalog.")
    tensor_parallel_degree: int = Field(1, ge=1, description="GPUs one model copy spans.")
    max_model_len: int = Field(gt=0, description="Longest context (prompt + output) in tokens.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=0.98, description="Fraction of each GPU the engine may use."
    )


ModelFamily = Literal["qwen2", "qwen3", "llama3", "llama4", "mistral", "hermes"]

# Which vLLM --tool-call-parser reads which model family's tool-call format (vLLM docs,
# features/tool_calling: "Hermes Models (hermes)"; Qwen2.5 "can use the hermes parser";
# "Llama Models (llama3_json)" with the tool_chat_template_llama3.1_json.jinja template;
# Llama 4 "llama4_pythonic"; "Mistral Models (mistral)"; Qwen3-Coder "qwen3_coder").
TOOL_PARSERS: dict[str, tuple[str, ...]] = {
    "qwen2": ("hermes",),
    "qwen3": ("hermes", "qwen3_coder"),
    "llama3": ("llama3_json",),
    "llama4": ("llama4_pythonic",),
    "mistral": ("mistral",),
    "hermes": ("hermes",),
}
# Families whose own chat template does not render tools the way the parser reads them.
NEEDS_CHAT_TEMPLATE = frozenset({"llama3"})


class ToolCalling(_Strict):
    """vLLM's auto tool choice (``--enable-auto-tool-choice --tool-call-parser``), so that
    ``tools`` with ``tool_choice: auto`` work (vLLM refuses them otherwise)."""

    model_family: ModelFamily = Field(
        description="Whose tool-call format the model emits; selects the valid parsers."
    )
    parser: str = Field(description="vLLM --tool-call-parser, valid for model_family.")
    chat_template: str | None = Field(
        None,
        min_length=1,
        description=(
            "vLLM --chat-template: a path inside the container or a Jinja template; required "
            "for llama3 (vLLM ships examples/tool_chat_template_llama3.1_json.jinja)."
        ),
    )

    @model_validator(mode="after")
    def _parser_reads_the_family(self) -> ToolCalling:
        valid = TOOL_PARSERS[self.model_family]
        if self.parser not in valid:
            raise ValueError(
                f"tool-call parser {self.parser!r} does not read {self.model_family} tool calls; "
                f"fix: use {' or '.join(valid)}"
            )
        if self.model_family in NEEDS_CHAT_TEMPLATE and self.chat_template is None:
            raise ValueError(
                f"{self.model_family} needs a tool-calling chat template; fix: set "
                "tool_calling.chat_template (e.g. vLLM's tool_chat_template_llama3.1_json.jinja)"
            )
        return self


class VllmContainer(_ContainerBase):
    """AWS vLLM container: OpenAI-compatible server; every SM_VLLM_<FLAG> becomes --<flag>."""

    family: Literal["vllm"] = Field("vllm", description="Selects the AWS vLLM container.")
    reasoning_parser: str | None = Field(
        None, description="vLLM --reasoning-parser, e.g. deepseek_r1 for reasoning_content."
    )
    max_num_seqs: int | None = Field(None, gt=0, description="Concurrent sequences per replica.")
    tool_calling: ToolCalling | None = Field(
        None, description="Serve tool calls (OpenAI tools / tool_choice); null: off."
    )
    engine_args: dict[Annotated[str, Field(pattern=_ENGINE_ARG_PATTERN)], EngineArgValue] = Field(
        default_factory=dict, description="Further vLLM flags (kebab-case name → value)."
    )


LMI_MODEL_LOADING_TIMEOUT_S = 1800
"""LMI's documented default ``option.model_loading_timeout`` (djl-serving
``serving/docs/lmi/deployment_guide/configurations.md``). The LMI images set
``MODEL_LOADING_TIMEOUT=1200`` in their environment (``serving/docker/lmi.Dockerfile``,
v0.35.0), which ``PyEnv.getModelLoadingTimeout`` reads when the option is not set."""


class LmiContainer(_ContainerBase):
    """DJL Serving LMI container, configured by a rendered serving.properties."""

    family: Literal["lmi"] = Field("lmi", description="Selects the DJL Serving LMI container.")
    rolling_batch: Literal["vllm", "lmi-dist", "disable"] = Field(
        "vllm",
        description=(
            "option.rolling_batch: the continuous-batching engine. lmi-dist was removed in "
            "LMI 0.33 (v15) and is refused for those images."
        ),
    )
    max_rolling_batch_size: int = Field(
        32, gt=0, description="option.max_rolling_batch_size: concurrent sequences per replica."
    )
    model_loading_timeout_s: int = Field(
        LMI_MODEL_LOADING_TIMEOUT_S,
        ge=60,
        le=3600,
        description=(
            "option.model_loading_timeout, in seconds: how long LMI waits for the model to "
            "download and load. The default is LMI's documented 1800 (its images set 1200 by "
            "environment, so it is always written). instance."
            "container_startup_health_check_timeout_s must be at least this."
        ),
    )
    options: dict[Annotated[str, Field(pattern=r"^[a-z0-9_.]+$")], EngineArgValue] = Field(
        default_factory=dict, description="Further serving.properties entries: option.<key>=value."
    )


class TgiContainer(_ContainerBase):
    """Hugging Face TGI container."""

    family: Literal["tgi"] = Field("tgi", description="Selects the Hugging Face TGI container.")
    max_input_length: int = Field(
        gt=0, description="MAX_INPUT_LENGTH: longest prompt in tokens; below max_model_len."
    )

    @model_validator(mode="after")
    def _input_shorter_than_total(self) -> TgiContainer:
        if self.max_input_length >= self.max_model_len:
            raise ValueError(
                f"max_input_length ({self.max_input_length}) must be below max_model_len "
                f"({self.max_model_len}); lower max_input_length or raise max_model_len"
            )
        return self


Container = Annotated[VllmContainer | LmiContainer | TgiContainer, Field(discriminator="family")]
