"""SageMaker inference host AMIs (``ProductionVariant.InferenceAmiVersion``) and the rule that
pairs each with the CUDA version of the container image it can run.

The driver and CUDA version of each AMI are copied from the documentation of
``ProductionVariant.InferenceAmiVersion`` in botocore's SageMaker service model
(``botocore/data/sagemaker/2017-07-24/service-2.json``, shape
``ProductionVariantInferenceAmiVersion``), which also says that every AMI from ``gpu-2-1`` on
runs the "NVIDIA Container Toolkit with disabled CUDA-compat mounting": the host does not mount
forward-compatibility libraries into the container, so an image built for a newer CUDA than the
host's driver supports runs only if it brings its own ``cuda-compat`` package.
``tests/test_amis.py`` checks this table against the installed botocore.

The rule (:func:`check_host_ami`): the AMI's CUDA major version must equal the image's. AWS's
Deep Learning Containers pair them the same way (aws/deep-learning-containers,
``test/test_utils/constants.py``: "AL2 AMI: driver 550 — for CUDA 12.x containers. AL2023 AMI:
driver 580 — for CUDA 13.x containers."). Within one major version CUDA's minor-version
compatibility applies (a 12.8 image runs on the 12.4 driver; the DLC images also install
``cuda-compat-12-8``); across major versions it does not: a ``cu130`` image on driver 550 fails
to initialise CUDA, so the container never passes its health check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

InferenceAmiVersion = Literal[
    "al2-ami-sagemaker-inference-gpu-2",
    "al2-ami-sagemaker-inference-gpu-2-1",
    "al2-ami-sagemaker-inference-gpu-3-1",
    "al2023-ami-sagemaker-inference-gpu-4-1",
]
"""The GPU AMIs of botocore's ``ProductionVariantInferenceAmiVersion`` enum (botocore 1.44;
``al2-ami-sagemaker-inference-neuron-2`` is for Inferentia/Trainium, which this library does
not serve)."""


@dataclass(frozen=True, order=True)
class CudaVersion:
    """A CUDA toolkit version, e.g. 12.8."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


_CUDA_TAG = re.compile(r"(?:^|-)cu(\d{2})(\d)(?:-|$)")


def cuda_from_tag(tag: str) -> CudaVersion | None:
    """The CUDA version an image tag names: ``…-cu128`` → 12.8, ``…-cu130-…`` → 13.0."""
    match = _CUDA_TAG.search(tag)
    return CudaVersion(int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class HostAmi:
    """What one inference AMI gives the container."""

    name: InferenceAmiVersion
    nvidia_driver: int
    cuda: CudaVersion
    cuda_compat_mounting: bool


HOST_AMIS: Final[dict[str, HostAmi]] = {
    ami.name: ami
    for ami in (
        HostAmi("al2-ami-sagemaker-inference-gpu-2", 535, CudaVersion(12, 2), True),
        HostAmi("al2-ami-sagemaker-inference-gpu-2-1", 535, CudaVersion(12, 2), False),
        HostAmi("al2-ami-sagemaker-inference-gpu-3-1", 550, CudaVersion(12, 4), False),
        HostAmi("al2023-ami-sagemaker-inference-gpu-4-1", 580, CudaVersion(13, 0), False),
    )
}
assert set(HOST_AMIS) == set(get_args(InferenceAmiVersion))


class HostAmiError(ValueError):
    """The host AMI cannot run the image."""


def default_host_ami(image_cuda: CudaVersion) -> HostAmi:
    """The newest-driver AMI of the image's CUDA major version."""
    matching = [ami for ami in HOST_AMIS.values() if ami.cuda.major == image_cuda.major]
    if not matching:
        raise HostAmiError(
            f"no SageMaker inference AMI runs CUDA {image_cuda.major}.x images (known: "
            f"{', '.join(f'{a.name} = CUDA {a.cuda}' for a in HOST_AMIS.values())}); "
            "fix: choose an image version built for one of those"
        )
    return max(matching, key=lambda ami: ami.nvidia_driver)


def check_host_ami(ami_name: str, image_cuda: CudaVersion, image: str) -> HostAmi:
    """The AMI ``ami_name`` if it can run ``image`` (built for ``image_cuda``), else raise
    :class:`HostAmiError` naming the AMI that can."""
    ami = HOST_AMIS[ami_name]
    if ami.cuda.major != image_cuda.major:
        right = default_host_ami(image_cuda)
        raise HostAmiError(
            f"{ami.name} has NVIDIA driver {ami.nvidia_driver} (CUDA {ami.cuda}) but "
            f"the image {image} is built for CUDA {image_cuda}: the container "
            f"would fail to initialise CUDA and never pass its health check; fix: set "
            f"{right.name} (driver {right.nvidia_driver}, CUDA {right.cuda}) or omit the field "
            "to get it by default"
        )
    return ami
