"""The instance GPU catalog (``llm_serving/config/gpus.py``) agrees with the SageMaker SDK's
``instance_gpu_info.json``. Run by ``make catalog`` (the SDK is a maintainer tool)."""

from __future__ import annotations

import json
from pathlib import Path

import sagemaker.core

from llm_serving.config import INSTANCE_GPUS

SDK_GPU_INFO = Path(sagemaker.core.__file__).parent / "image_uri_config" / "instance_gpu_info.json"

# The SDK lists ml.g5.48xlarge with the CUDA-visible 22,888 MiB per A10G, every other g5 size
# with the nominal 24 GiB. The catalog uses nominal sizes throughout (see gpus.py).
SDK_OUTLIERS = {"ml.g5.48xlarge"}


def test_catalog_agrees_with_sagemaker_sdk() -> None:
    sdk = json.loads(SDK_GPU_INFO.read_text())["us-east-1"]
    compared = 0
    for instance_type, facts in sdk.items():
        ours = INSTANCE_GPUS.get(instance_type)
        if ours is None:
            continue
        compared += 1
        assert ours.count == facts["Count"], instance_type
        if instance_type not in SDK_OUTLIERS:
            assert ours.total_gib * 1024 == facts["TotalGpuMemoryInMiB"], instance_type
    assert compared >= 15
