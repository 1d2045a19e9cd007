"""Model configs: the shipped ones load, and every kind of mistake fails with file, field, fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llm_serving.config import (
    ConfigError,
    GatewayConfig,
    HubWeights,
    LmiContainer,
    VllmContainer,
    load_gateway_config,
    load_model_config,
    load_model_configs,
)
from tests.conftest import CONFIG_DIR, DELETE, variant

DEEPSEEK = "deepseek-r1-distill-qwen-7b"
LLAMA = "llama-2-13b-chat"


def test_shipped_configs_load() -> None:
    configs = {c.name: c for c in load_model_configs(CONFIG_DIR)}
    assert set(configs) == {DEEPSEEK, LLAMA}

    deepseek = configs[DEEPSEEK]
    assert isinstance(deepseek.container, VllmContainer)
    assert deepseek.container.reasoning_parser == "deepseek_r1"
    assert deepseek.container.max_model_len == 16384
    assert deepseek.instance.type == "ml.g5.2xlarge"
    assert deepseek.instance.inference_ami_version == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert deepseek.custom_attributes is None

    llama = configs[LLAMA]
    assert isinstance(llama.container, LmiContainer)
    assert llama.instance.type == "ml.g5.12xlarge"
    assert llama.container.tensor_parallel_degree == 4
    assert llama.container.max_rolling_batch_size == 64
    assert llama.container.model_loading_timeout_s == 1800
    assert llama.instance.model_data_download_timeout_s == 3600
    assert llama.instance.container_startup_health_check_timeout_s == 3600
    assert llama.custom_attributes is None
    assert isinstance(llama.weights, HubWeights)
    assert llama.weights.token_secret_name == "llm-serving/hugging-face-token"


# (changes, field named in the message, words the fix must contain)
TIMEOUT = "instance.model_data_download_timeout_s"
AMI = "al2023-ami-sagemaker-inference-gpu-4-1"
AMI_FIELD = "instance.inference_ami_version"
CUDA12_AMI = "al2-ami-sagemaker-inference-gpu-3-1"
ROLLING = {"strategy": "rolling", "batch_instances": 1}
BAD_CONFIGS: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing field", {"instance__type": DELETE}, "instance.type", "add this field"),
    ("misspelt key", {"instance__instance_count": 2}, "instance.instance_count", "spelling"),
    ("unknown family", {"container__family": "triton"}, "container", "vllm"),
    ("bad weights source", {"weights__source": "ftp"}, "weights", "'hub'"),
    ("bad instance type", {"instance__type": "g5.2xlarge"}, "instance.type", "pattern"),
    ("non-GPU instance", {"instance__type": "ml.m5.xlarge"}, "instance.type", "ml.g5.2xlarge"),
    ("timeout too long", {TIMEOUT.replace(".", "__"): 7200}, TIMEOUT, "correct"),
    ("scaling inverted", {"scaling__min_instances": 3, "scaling__max_instances": 2}, "scaling",
     "raise max_instances"),
    ("unknown image", {"container__image_version": "9.9.9"}, "container.image_version", "0.30.0"),
    ("bad AMI", {"instance__inference_ami_version": "ubuntu"}, "instance.inference_ami_version",
     AMI),
    ("bad engine arg", {"container__engine_args": {"Max Model": 1}}, "container.vllm.engine_args",
     "pattern"),
    ("tp beyond GPUs", {"container__tensor_parallel_degree": 2}, "instance.type", "≥ 2 GPUs"),
    # Deploy rules (llm_serving/config/deploy_rules.py): what AWS would reject mid-deploy.
    ("CUDA 13 image on a CUDA 12 AMI", {"instance__inference_ami_version": CUDA12_AMI},
     AMI_FIELD, f"set {AMI}"),
    ("rolling on one instance", {"deployment": ROLLING}, "deployment.strategy",
     "use strategy: blue_green"),
    ("rolling batch above 50 %", {"instance__initial_count": 2,
     "scaling": {"min_instances": 2, "max_instances": 2},
     "deployment": {**ROLLING, "batch_instances": 2}}, "deployment.batch_instances",
     "set batch_instances to 1"),
    ("rolling batch below 5 % of max", {"instance__initial_count": 2,
     "scaling": {"min_instances": 2, "max_instances": 40}, "deployment": ROLLING},
     "deployment.strategy", "raise scaling.min_instances to at least 4"),
    ("bf16 on T4", {"instance__type": "ml.g4dn.12xlarge",
     "container__tensor_parallel_degree": 4}, "architecture.dtype", "set architecture.dtype: fp16"),
    ("bf16 KV cache on V100", {"instance__type": "ml.p3.8xlarge", "architecture__dtype": "fp16",
     "architecture__kv_cache_dtype": "bf16", "container__tensor_parallel_degree": 4},
     "architecture.kv_cache_dtype", "fp16"),
]  # fmt: skip

BAD_LMI_CONFIGS: list[tuple[str, dict[str, Any], str, str]] = [
    ("lmi-dist on LMI 0.33", {"container__rolling_batch": "lmi-dist"}, "container.rolling_batch",
     "use rolling_batch: vllm"),
    ("health check shorter than loading", {
     "instance__container_startup_health_check_timeout_s": 1200},
     "instance.container_startup_health_check_timeout_s", "raise it to at least 1800"),
    ("licensed Hub model without a token", {"weights__token_secret_name": DELETE},
     "weights.token_secret_name", "store that token in Secrets Manager"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "changes", "field", "fix"),
    [pytest.param(DEEPSEEK, c, f, x, id=i) for i, c, f, x in BAD_CONFIGS]
    + [pytest.param(LLAMA, c, f, x, id=i) for i, c, f, x in BAD_LMI_CONFIGS],
)
def test_invalid_config_names_file_field_and_fix(
    write_configs: Callable[..., Path], base: str, changes: dict[str, Any], field: str, fix: str
) -> None:
    directory = write_configs(variant(base, **changes))
    with pytest.raises(ConfigError) as raised:
        load_model_configs(directory)
    message = str(raised.value)
    assert f"{base}.yaml" in message
    assert field in message
    assert fix in message


def test_a_yml_file_is_an_error_not_ignored(write_configs: Callable[..., Path]) -> None:
    directory = write_configs(variant(DEEPSEEK))
    (directory / "qwen.yml").write_text((CONFIG_DIR / f"{DEEPSEEK}.yaml").read_text())
    with pytest.raises(
        ConfigError, match=r"qwen\.yml: only \*\.yaml files .* rename to qwen\.yaml"
    ):
        load_model_configs(directory)


def test_unaccepted_licence_fails(write_configs: Callable[..., Path]) -> None:
    directory = write_configs(variant(LLAMA, license__accept_eula=False))
    with pytest.raises(
        ConfigError, match=r"(?s)llama-2-13b-chat\.yaml.*license.*accept_eula: true"
    ):
        load_model_configs(directory)


def test_all_errors_in_one_message(write_configs: Callable[..., Path]) -> None:
    directory = write_configs(variant(DEEPSEEK, instance__type=DELETE, scaling__max_instances=0))
    with pytest.raises(ConfigError) as raised:
        load_model_configs(directory)
    assert "2 error(s)" in str(raised.value)
    assert "instance.type" in str(raised.value)
    assert "scaling.max_instances" in str(raised.value)


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "other-name.yaml"
    path.write_text((CONFIG_DIR / f"{DEEPSEEK}.yaml").read_text())
    with pytest.raises(ConfigError, match="rename the file"):
        load_model_config(path)


def test_yaml_syntax_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_model_config(path)


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("name: twice\ncontainer: {}\ncontainer: {}\n")
    with pytest.raises(
        ConfigError, match=r"twice\.yaml: not valid YAML: key 'container' appears twice"
    ):
        load_model_config(path)


def test_empty_directory_and_unknown_selection(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no model configs"):
        load_model_configs(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_model_configs(CONFIG_DIR, only=["gpt-5"])


def test_tgi_input_must_be_shorter_than_context(write_configs: Callable[..., Path]) -> None:
    tgi = variant(
        DEEPSEEK,
        container={"family": "tgi", "image_version": "3.3.6", "max_model_len": 4096,
                   "max_input_length": 4096},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="max_input_length"):
        load_model_configs(write_configs(tgi))


# --- gateway.yaml ---------------------------------------------------------------------------


def test_shipped_gateway_config_is_the_defaults() -> None:
    """The shipped file documents the defaults; it must not drift from the schema. One value
    differs on purpose: this app sets API Gateway's account CloudWatch role (opt-in for
    constructs in other apps)."""
    assert load_gateway_config(CONFIG_DIR) == GatewayConfig.model_validate(
        {"api": {"account_cloudwatch_role": True}}
    )
    config = GatewayConfig()
    assert config.web_adapter.layer_version == 26
    assert config.web_adapter.architecture == "arm64"
    assert config.function.memory_mb == 256
    assert config.function.reserved_concurrency is None
    assert config.limits.max_request_bytes == 1_048_576
    assert config.api.account_cloudwatch_role is False  # account-wide: opt-in


def test_gateway_config_is_optional_and_may_be_empty(tmp_path: Path) -> None:
    assert load_gateway_config(tmp_path) == GatewayConfig()
    (tmp_path / "gateway.yaml").write_text("# nothing set\n")
    assert load_gateway_config(tmp_path) == GatewayConfig()


# (yaml, field named in the message, words the fix must contain)
BAD_GATEWAY_CONFIGS: list[tuple[str, str, str, str]] = [
    ("misspelt key", "web_adapter:\n  layer_versoin: 27\n", "web_adapter.layer_versoin",
     "spelling"),
    ("unknown section", "consumer: []\n", "consumer", "spelling"),
    ("bad architecture", "web_adapter:\n  architecture: arm\n", "web_adapter.architecture",
     "'arm64'"),
    ("bad layer arn", "web_adapter:\n  layer_arn: my-layer\n", "web_adapter.layer_arn",
     "pattern"),
    ("retention", "function:\n  log_retention_days: 10\n", "function.log_retention_days",
     "use one of 1, 3, 5, 7, 14"),
    ("memory", "function:\n  memory_mb: 64\n", "function.memory_mb", "correct the value"),
    ("zero concurrency", "function:\n  reserved_concurrency: 0\n",
     "function.reserved_concurrency", "correct the value"),
    ("request too large", "limits:\n  max_request_bytes: 10000000\n", "limits.max_request_bytes",
     "6291456"),
    ("timeout type", "upstream:\n  read_timeout_s: soon\n", "upstream.read_timeout_s", "correct"),
    ("quota moved to tiers", "api:\n  quota_requests_per_day: 100\n", "api", "tiers.<name>"),
    ("quota", "tiers:\n  gold: {rate_limit: 1, burst_limit: 1, default_reservation: 1, "
     "requests_per_day: 0}\nconsumers: []\n", "tiers.gold.requests_per_day", "correct"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [pytest.param(t, f, x, id=i) for i, t, f, x in BAD_GATEWAY_CONFIGS],
)
def test_invalid_gateway_config_names_file_field_and_fix(
    tmp_path: Path, text: str, field: str, fix: str
) -> None:
    (tmp_path / "gateway.yaml").write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_gateway_config(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'gateway.yaml'}: invalid gateway config")
    assert f"  {field}: " in message
    assert fix in message


def test_gateway_config_must_be_a_mapping_of_valid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("- web_adapter\n")
    with pytest.raises(ConfigError, match=r"gateway\.yaml: expected a mapping"):
        load_gateway_config(tmp_path)
    path.write_text("web_adapter: [unclosed\n")
    with pytest.raises(ConfigError, match=r"gateway\.yaml: not valid YAML"):
        load_gateway_config(tmp_path)


def test_gateway_yaml_is_not_a_model_config() -> None:
    assert "gateway" not in {c.name for c in load_model_configs(CONFIG_DIR)}
