"""Model configs that serve tools: vLLM's auto tool choice, its parser checked against the
model family, and the shipped example (not in the default app) synthesizing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from llm_serving.config import ConfigError, load_model_config, load_model_configs
from llm_serving.container_env import container_env
from tests.conftest import ROOT, build_default, variant

EXAMPLE = ROOT / "examples" / "tool-calling" / "qwen2-5-7b-instruct.yaml"


def test_the_example_turns_on_auto_tool_choice_with_the_hermes_parser() -> None:
    config = load_model_config(EXAMPLE)
    env = container_env(config)
    assert env["SM_VLLM_ENABLE_AUTO_TOOL_CHOICE"] == "true"
    assert env["SM_VLLM_TOOL_CALL_PARSER"] == "hermes"
    assert "SM_VLLM_CHAT_TEMPLATE" not in env


def test_the_example_synthesizes_as_its_own_app() -> None:
    _, built = build_default(config_dir=EXAMPLE.parent)
    (stack,) = built.models.values()
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ProductionVariants": [
                Match.object_like(
                    {
                        "InstanceType": "ml.g5.2xlarge",
                        "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1",
                    }
                )
            ]
        },
    )
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": Match.object_like(
                {
                    "Environment": Match.object_like(
                        {
                            "SM_VLLM_ENABLE_AUTO_TOOL_CHOICE": "true",
                            "SM_VLLM_TOOL_CALL_PARSER": "hermes",
                        }
                    )
                }
            )
        },
    )
    assert built.gateway is not None


def test_the_example_is_not_in_the_default_app() -> None:
    names = {c.name for c in load_model_configs(ROOT / "model_configs")}
    assert "qwen2-5-7b-instruct" not in names


@pytest.mark.parametrize(
    ("tool_calling", "message"),
    [
        ({"model_family": "qwen2", "parser": "llama3_json"}, "fix: use hermes"),
        ({"model_family": "llama3", "parser": "llama3_json"}, "needs a tool-calling chat template"),
        ({"model_family": "gemma", "parser": "hermes"}, "model_family"),
    ],
)
def test_a_parser_that_cannot_read_the_family_fails_synth(
    write_configs: Callable[..., Path], tool_calling: dict[str, Any], message: str
) -> None:
    directory = write_configs(
        variant("deepseek-r1-distill-qwen-7b", container__tool_calling=tool_calling)
    )
    with pytest.raises(ConfigError, match=message):
        load_model_configs(directory)


def test_llama3_with_its_template_passes_the_template_to_vllm() -> None:
    config = load_model_config(EXAMPLE).model_copy(deep=True)
    data = config.model_dump(mode="json")
    data["container"]["tool_calling"] = {
        "model_family": "llama3",
        "parser": "llama3_json",
        "chat_template": "/opt/templates/tool_chat_template_llama3.1_json.jinja",
    }
    env = container_env(type(config).model_validate(data))
    assert env["SM_VLLM_CHAT_TEMPLATE"].endswith("llama3.1_json.jinja")
