"""The synth-time GPU memory fit check and the instance GPU catalog (checked against the
SageMaker SDK's GPU facts by ``maintainer/test_instance_gpus_sdk.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llm_serving.config import (
    ConfigError,
    GpuFitError,
    check_fit,
    fit_report,
    load_model_configs,
)
from llm_serving.config.schema import ModelConfig
from tests.conftest import CONFIG_DIR, variant


def _config(**changes: object) -> ModelConfig:
    return ModelConfig.model_validate(variant("deepseek-r1-distill-qwen-7b", **changes))


def test_shipped_models_fit_with_expected_budget() -> None:
    reports = {c.name: fit_report(c) for c in load_model_configs(CONFIG_DIR)}
    deepseek = reports["deepseek-r1-distill-qwen-7b"]
    # 7.62e9 params × 2 bytes = 14.19 GiB on the one A10G; KV 2×28×4×128×2 B × 16384 = 0.875 GiB
    assert deepseek.weights_gib == pytest.approx(14.19, abs=0.01)
    assert deepseek.kv_cache_gib == pytest.approx(0.875)
    assert deepseek.budget_gib == pytest.approx(21.6)
    assert deepseek.fits
    llama = reports["llama-2-13b-chat"]
    # 13.02e9 × 2 bytes split over 4 GPUs; KV 2×40×40×128×2 B × 4096 / 4
    assert llama.weights_gib == pytest.approx(6.06, abs=0.01)
    assert llama.kv_cache_gib == pytest.approx(0.78125)
    assert llama.fits


def test_70b_fp16_on_g5_2xlarge_fails_with_the_numbers(write_configs: Callable[..., Path]) -> None:
    big = variant(
        "deepseek-r1-distill-qwen-7b",
        name="llama-70b",
        architecture={"parameters_billion": 70, "dtype": "fp16", "num_layers": 80,
                      "num_kv_heads": 8, "head_dim": 128},
    )  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        load_model_configs(write_configs(big))
    message = str(raised.value)
    assert "llama-70b.yaml: instance.type" in message
    assert "does not fit on ml.g5.2xlarge" in message
    assert "weights 130.39 GiB" in message  # 70e9 × 2 B / 2^30
    assert "24 GiB per A10G" in message
    assert "21.60 GiB" in message
    assert "choose a larger instance type" in message


def test_same_70b_fits_when_quantized_and_sharded() -> None:
    config = _config(
        architecture={"parameters_billion": 70, "dtype": "int4", "num_layers": 80,
                      "num_kv_heads": 8, "head_dim": 128},
        instance__type="ml.g5.12xlarge",
        container__tensor_parallel_degree=4,
        container__max_model_len=8192,
    )  # fmt: skip
    report = check_fit(config)
    assert report.weights_gib == pytest.approx(70e9 * 0.5 / 4 / 2**30)


def test_long_context_alone_can_break_the_fit() -> None:
    config = _config(
        container__max_model_len=131072,
        container__engine_args={"enable-prefix-caching": True},  # its prefix-aware routing
    )
    with pytest.raises(GpuFitError, match=r"KV cache 7\.00 GiB"):
        check_fit(config)
