"""Deploy rules that AWS would enforce 20 minutes into a deploy, checked at synth
(``llm_serving/config/deploy_rules.py``, ``amis.py``). File-level messages are asserted in
``test_config_schema.py``; here: the tables against their sources, the defaults, and the
construct-level error."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import botocore
import pytest
from aws_cdk import Stack

from llm_serving import LlmEndpoint, ModelArtifacts, Stage
from llm_serving.config.amis import HOST_AMIS, CudaVersion, cuda_from_tag, default_host_ami
from llm_serving.config.deploy_rules import plan_deployment, rolling_batch_range
from llm_serving.config.images import image_spec, image_versions
from llm_serving.config.schema import BlueGreenDeployment, ModelConfig, RollingDeployment, Scaling
from tests.conftest import make_app, variant

DEEPSEEK = "deepseek-r1-distill-qwen-7b"


def _botocore_shape(name: str) -> dict[str, Any]:
    data = Path(botocore.__file__).parent / "data" / "sagemaker" / "2017-07-24"
    model = json.loads(gzip.decompress((data / "service-2.json.gz").read_bytes()))
    shape: dict[str, Any] = model["shapes"][name]
    return shape


def test_ami_table_matches_botocores_documentation() -> None:
    """Every GPU AMI in botocore's enum is known, with the driver and CUDA version its
    documentation states."""
    enum = _botocore_shape("ProductionVariantInferenceAmiVersion")["enum"]
    assert set(HOST_AMIS) == {name for name in enum if "-gpu-" in name}
    doc = _botocore_shape("ProductionVariant")["members"]["InferenceAmiVersion"]["documentation"]
    for name, ami in HOST_AMIS.items():
        section = doc.split(f"<dt>{name}</dt>", 1)[1].split("</dd>", 1)[0]
        assert f"NVIDIA driver version: {ami.nvidia_driver}" in section, name
        assert f"CUDA version: {ami.cuda}" in section, name
        assert ("disabled CUDA-compat mounting" in section) is not ami.cuda_compat_mounting, name


@pytest.mark.parametrize(
    ("tag", "cuda"),
    [
        ("0.33.0-lmi15.0.0-cu128", CudaVersion(12, 8)),
        ("0.30.0-gpu-py312-cu130-ubuntu24.04-sagemaker", CudaVersion(13, 0)),
        ("2.6.0-tgi3.2.3-gpu-py311-cu124-ubuntu22.04", CudaVersion(12, 4)),
        ("latest", None),
    ],
)
def test_cuda_version_comes_from_the_tag(tag: str, cuda: CudaVersion | None) -> None:
    assert cuda_from_tag(tag) == cuda


def test_every_pinned_image_has_an_ami_of_its_cuda_major() -> None:
    for family in ("vllm", "lmi", "tgi"):
        for version in image_versions(family):
            image = image_spec(family, version)
            tagged = re.search(r"cu(\d+)", image.tag)
            assert tagged is not None
            assert str(image.cuda).replace(".", "") == tagged[1]
            assert default_host_ami(image.cuda).cuda.major == image.cuda.major


def test_default_ami_follows_the_image() -> None:
    cuda13 = ModelConfig.model_validate(variant(DEEPSEEK, instance__inference_ami_version=None))
    assert plan_deployment(cuda13).host_ami.name == "al2023-ami-sagemaker-inference-gpu-4-1"
    cuda12 = ModelConfig.model_validate(
        variant("llama-2-13b-chat", instance__inference_ami_version=None)
    )
    assert plan_deployment(cuda12).host_ami.name == "al2-ami-sagemaker-inference-gpu-3-1"


@pytest.mark.parametrize(
    ("min_instances", "max_instances", "expected"),
    [(1, 1, (1, 0)), (1, 4, (1, 0)), (2, 2, (1, 1)), (2, 20, (1, 1)), (2, 21, (2, 1)),
     (10, 10, (1, 5)), (4, 100, (5, 2))],
)  # fmt: skip
def test_rolling_batch_range_is_5_to_50_percent_at_every_count(
    min_instances: int, max_instances: int, expected: tuple[int, int]
) -> None:
    low, high = rolling_batch_range(
        Scaling(min_instances=min_instances, max_instances=max_instances)
    )
    assert (low, high) == expected
    for count in range(min_instances, max_instances + 1):
        for batch in range(low, high + 1):
            assert 0.05 <= batch / count <= 0.5


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        ({"min_instances": 1, "max_instances": 2}, BlueGreenDeployment),
        ({"min_instances": 2, "max_instances": 4}, RollingDeployment),
        ({"min_instances": 2, "max_instances": 60}, BlueGreenDeployment),
    ],
)
def test_default_deployment_is_valid_for_the_instance_counts(
    scaling: dict[str, int], expected: type
) -> None:
    config = ModelConfig.model_validate(
        variant(DEEPSEEK, deployment=None, instance__initial_count=scaling["min_instances"],
                scaling=scaling)
    )  # fmt: skip
    deployment = plan_deployment(config).deployment
    assert isinstance(deployment, expected)
    if isinstance(deployment, RollingDeployment):
        assert deployment.batch_instances == 1


def test_the_construct_refuses_a_broken_rule_naming_model_field_and_fix() -> None:
    stack = Stack(make_app(), "Rules", env={"region": "us-east-1"})
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    config = ModelConfig.model_validate(
        variant(DEEPSEEK, instance__inference_ami_version="al2-ami-sagemaker-inference-gpu-3-1")
    )
    with pytest.raises(
        ValueError,
        match=(
            rf"^{DEEPSEEK}: instance\.inference_ami_version: .*CUDA 13\.0.*fix: set "
            r"al2023-ami-sagemaker-inference-gpu-4-1"
        ),
    ):
        LlmEndpoint(stack, "Llm", config=config, artifacts=artifacts, stage=Stage.DEV)
