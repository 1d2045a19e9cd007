"""What SageMaker would refuse (or what would not work) with inference components and routing,
refused at synth with the file, the field and the fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_serving.config import ConfigError, load_model_configs
from llm_serving.stage import Stage
from stacks import AppSettings, build
from tests.conftest import ROOT, make_app, variant

EXAMPLE = ROOT / "examples" / "scale-to-zero"
OWNER = "qwen2-5-1-5b-instruct"
MEMBER = "qwen2-5-0-5b-instruct"


def _example(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def test_the_example_loads(write_configs: Callable[..., Path]) -> None:
    configs = load_model_configs(write_configs(_example(OWNER), _example(MEMBER)))
    assert {c.name for c in configs} == {OWNER, MEMBER}


def test_zero_copies_at_creation_is_refused(write_configs: Callable[..., Path]) -> None:
    bad = _example(MEMBER, hosting__copies={"min": 0, "max": 2, "initial": 0})
    refused = r"copies\.initial is 0, but SageMaker refuses .* CopyCount 0"
    with pytest.raises(ConfigError, match=refused):
        load_model_configs(write_configs(_example(OWNER), bad))


def test_a_second_declaration_names_both_files(write_configs: Callable[..., Path]) -> None:
    owner = _example(OWNER)
    second = _example(MEMBER, hosting__endpoint=copy.deepcopy(owner["hosting"]["endpoint"]))
    directory = write_configs(owner, second)
    with pytest.raises(ConfigError) as raised:
        load_model_configs(directory)
    message = str(raised.value)
    assert str(directory / f"{OWNER}.yaml") in message
    assert str(directory / f"{MEMBER}.yaml") in message
    assert "is declared here and in" in message
    assert "hosting.endpoint: small-models" in message  # the fix


def test_an_undeclared_shared_endpoint_is_refused(write_configs: Callable[..., Path]) -> None:
    directory = write_configs(_example(MEMBER))
    with pytest.raises(ConfigError, match=r"shared endpoint 'small-models' is not declared"):
        load_model_configs(directory)


def test_another_instance_type_on_the_shared_endpoint_names_both_files(
    write_configs: Callable[..., Path],
) -> None:
    member = _example(MEMBER, instance__type="ml.g5.2xlarge")
    directory = write_configs(_example(OWNER), member)
    with pytest.raises(ConfigError) as raised:
        load_model_configs(directory)
    message = str(raised.value)
    assert f"{MEMBER}.yaml: instance.type: ml.g5.2xlarge differs" in message
    assert f"{OWNER}.yaml" in message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hosting__accelerators_per_copy": 8}, "8 GPUs per copy, but ml.g5.12xlarge has 4"),
        ({"container__tensor_parallel_degree": 2},
         r"a copy reserves 1 GPU.*tensor_parallel_degree spans 2"),
        # The per-copy fit check: a 1-GPU copy of a model too large for one A10G.
        ({"architecture__parameters_billion": 14.0}, "does not fit on ml.g5.12xlarge"),
    ],
)  # fmt: skip
def test_copies_must_fit_the_instance(
    write_configs: Callable[..., Path], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model_configs(write_configs(_example(OWNER), _example(MEMBER, **changes)))


def test_initial_copies_must_fit_the_endpoints_gpus(write_configs: Callable[..., Path]) -> None:
    member = _example(MEMBER, hosting__copies={"min": 0, "max": 4, "initial": 4})
    with pytest.raises(ConfigError, match=r"reserve 5 GPU\(s\) but 1 × ml.g5.12xlarge has 4"):
        load_model_configs(write_configs(_example(OWNER), member))


def test_prefix_aware_on_a_shared_endpoint_needs_caching_in_every_model(
    write_configs: Callable[..., Path],
) -> None:
    routing = {"strategy": "prefix_aware", "prefix_length": 2048, "concurrency_threshold": 16}
    owner = _example(OWNER, hosting__endpoint={**_example(OWNER)["hosting"]["endpoint"],
                                               "routing": routing})  # fmt: skip
    with pytest.raises(ConfigError, match=f"{MEMBER}.yaml: shared endpoint 'small-models' routes"):
        load_model_configs(write_configs(owner, _example(MEMBER)))


def test_prefix_aware_without_prefix_caching_is_refused(write_configs: Callable[..., Path]) -> None:
    config = variant(
        "deepseek-r1-distill-qwen-7b", container__engine_args={"enable-prefix-caching": False}
    )
    with pytest.raises(ConfigError, match=r"prefix_aware routing .* has prefix caching off"):
        load_model_configs(write_configs(config))


def test_prefix_aware_needs_its_parameters(write_configs: Callable[..., Path]) -> None:
    config = variant("deepseek-r1-distill-qwen-7b", hosting__routing={"strategy": "prefix_aware"})
    with pytest.raises(ConfigError, match="needs prefix_length"):
        load_model_configs(write_configs(config))


def test_endpoint_sections_are_refused_on_a_component(write_configs: Callable[..., Path]) -> None:
    member = _example(MEMBER, scaling={"min_instances": 1, "max_instances": 2})
    with pytest.raises(ConfigError, match=r"scaling applies to hosting\.mode endpoint"):
        load_model_configs(write_configs(_example(OWNER), member))


def test_scale_to_zero_is_refused_where_a_region_refuses_it(
    write_configs: Callable[..., Path],
) -> None:
    directory = write_configs(_example(OWNER), _example(MEMBER))
    settings = AppSettings(stage=Stage.DEV, region="eu-west-3",
                           config_dir=directory)  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        build(make_app(), settings)
    message = str(raised.value)
    assert f"{OWNER}.yaml: hosting.endpoint.min_instances: 0" in message
    assert "refused in eu-west-3" in message
    assert "stdapi-ai/stdapi.ai#43" in message  # the source
    # With a minimum of one instance the same configs synthesize there.
    owner = _example(OWNER)
    owner["hosting"]["endpoint"]["min_instances"] = 1
    directory = write_configs(owner, _example(MEMBER))
    build(make_app(), AppSettings(stage=settings.stage, region="eu-west-3",
                                  config_dir=directory))  # fmt: skip
