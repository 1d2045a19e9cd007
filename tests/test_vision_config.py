"""Model configs that take images: ``gateway.image_input`` reaches the function's route table,
is refused where the gateway sends a plain prompt, and agrees with vLLM's per-prompt limit; the
shipped example (not in the default app) synthesizes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from llm_gateway.contract import ROUTES_ENV, ImageInput
from llm_serving.config import ConfigError, load_model_config, load_model_configs
from llm_serving.container_env import container_env
from llm_serving.gateway_tables import BackendTarget, backend
from tests.conftest import ROOT, build_default, variant
from tests.test_gateway import _function_env, _join, _placeholder_key_ids

EXAMPLE = ROOT / "examples" / "vision" / "qwen2-5-vl-7b-instruct.yaml"


def test_the_example_limits_images_in_vllm_as_in_the_gateway() -> None:
    config = load_model_config(EXAMPLE)
    env = container_env(config)
    assert json.loads(env["SM_VLLM_LIMIT_MM_PER_PROMPT"]) == {"image": 2, "video": 0}
    assert config.gateway.image_input == ImageInput(max_images=2, tokens_per_image=1280)
    assert backend(BackendTarget(config, "ep-vl")).image_input == config.gateway.image_input


def test_the_example_synthesizes_with_image_input_in_the_route_table() -> None:
    _, built = build_default(config_dir=EXAMPLE.parent)
    assert built.gateway is not None
    template = Template.from_stack(built.gateway)
    routes = json.loads(_join(_function_env(template)[ROUTES_ENV], _placeholder_key_ids(template)))
    (route,) = routes["routes"]
    (target,) = route["backends"]
    assert target["image_input"] == {"max_images": 2, "tokens_per_image": 1280,
                                     "remote_urls": False}  # fmt: skip


def test_the_example_is_not_in_the_default_app() -> None:
    names = {c.name for c in load_model_configs(ROOT / "model_configs")}
    assert "qwen2-5-vl-7b-instruct" not in names


@pytest.mark.parametrize(
    ("base", "changes", "message"),
    [
        ("llama-2-13b-chat", {"gateway__stream_format": "lmi"},
         "gateway.image_input needs the openai stream format"),
        ("deepseek-r1-distill-qwen-7b",
         {"container__engine_args": {"limit-mm-per-prompt": '{"image": 1}',
                                     "enable-prefix-caching": True}},
         "lets 2 images through but vLLM's limit-mm-per-prompt takes 1"),
        ("deepseek-r1-distill-qwen-7b",
         {"container__engine_args": {"limit-mm-per-prompt": "image=2",
                                     "enable-prefix-caching": True}},
         "limit-mm-per-prompt must be a JSON object"),
    ],
)  # fmt: skip
def test_image_input_that_cannot_work_fails_synth(
    write_configs: Callable[..., Path], base: str, changes: dict[str, Any], message: str
) -> None:
    config = variant(base, gateway__image_input={"max_images": 2}, **changes)
    with pytest.raises(ConfigError, match=message):
        load_model_configs(write_configs(config))
