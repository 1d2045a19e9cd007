"""GPU catalog of SageMaker instance types and the synth-time "does the model fit" check.

Counts and memory agree with the SageMaker SDK's ``instance_gpu_info.json`` wherever the SDK
lists the type (tests/test_gpu_fit.py checks that); g6/g6e and g5.xlarge come from the EC2
instance-type documentation because the SDK does not list them. Memory is the nominal size;
CUDA sees a little less (22,888 MiB of an A10G's 24 GiB, per the SDK's g5.48xlarge entry),
which the ``gpu_memory_utilization`` factor and the runtime overhead leave room for.

``instance_storage`` records NVMe instance-store volumes: SageMaker rejects an endpoint
config ``KmsKeyId`` for such types (their local disks are encrypted by the instance hardware),
so the endpoint construct only sets ``KmsKeyId`` where this is False.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_serving.config.schema import BYTES_PER_PARAMETER, ModelConfig

GIB = 1024**3


@dataclass(frozen=True)
class InstanceGpus:
    """GPU facts for one SageMaker instance type."""

    gpu: str
    count: int
    gib_per_gpu: int
    instance_storage: bool
    bf16: bool
    """Compute capability ≥ 8.0 (Ampere and later): vLLM refuses bfloat16 below it
    (vllm-project/vllm ``vllm/platforms/cuda.py``, ``check_if_supports_dtype``: "Bfloat16 is
    only supported on GPUs with compute capability of at least 8.0")."""

    @property
    def total_gib(self) -> int:
        return self.count * self.gib_per_gpu


# NVIDIA compute capability per GPU (developer.nvidia.com/cuda-gpus): T4 7.5, V100 7.0,
# A10G 8.6, L4 8.9, L40S 8.9, A100 8.0, H100 9.0.
_COMPUTE_CAPABILITY = {
    "T4": 7.5,
    "V100": 7.0,
    "A10G": 8.6,
    "L4": 8.9,
    "L40S": 8.9,
    "A100": 8.0,
    "H100": 9.0,
}


def _family(
    gpu: str, gib: int, storage: bool, sizes: dict[str, int], prefix: str
) -> dict[str, InstanceGpus]:
    bf16 = _COMPUTE_CAPABILITY[gpu] >= 8.0
    return {
        f"{prefix}.{size}": InstanceGpus(gpu, n, gib, storage, bf16) for size, n in sizes.items()
    }


_G5_PATTERN = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1}
_G5_PATTERN |= {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
_G4DN_PATTERN = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1}
_G4DN_PATTERN |= {"12xlarge": 4}

INSTANCE_GPUS: dict[str, InstanceGpus] = {
    **_family("T4", 16, True, _G4DN_PATTERN, "ml.g4dn"),
    **_family("A10G", 24, True, _G5_PATTERN, "ml.g5"),
    **_family("L4", 24, True, _G5_PATTERN, "ml.g6"),
    **_family("L40S", 48, True, _G5_PATTERN, "ml.g6e"),
    **_family("V100", 16, False, {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}, "ml.p3"),
    **_family("A100", 40, True, {"24xlarge": 8}, "ml.p4d"),
    **_family("A100", 80, True, {"24xlarge": 8}, "ml.p4de"),
    **_family("H100", 80, True, {"48xlarge": 8}, "ml.p5"),
}

RUNTIME_OVERHEAD_GIB = 1.5
"""CUDA context, activations and engine workspace per GPU (the 1–2 GiB rule of thumb)."""


class UnknownInstanceTypeError(ValueError):
    """The instance type is not a GPU type in the catalog."""


class GpuFitError(ValueError):
    """The model does not fit the instance's GPUs; the message carries the arithmetic."""


@dataclass(frozen=True)
class FitReport:
    """Per-GPU memory budget of one model on one instance type, in GiB."""

    instance_type: str
    gpus: InstanceGpus
    tensor_parallel_degree: int
    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    budget_gib: float

    @property
    def needed_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def fits(self) -> bool:
        return self.needed_gib <= self.budget_gib

    def explain(self) -> str:
        return (
            f"per GPU: weights {self.weights_gib:.2f} GiB + KV cache {self.kv_cache_gib:.2f} GiB "
            f"+ runtime {self.overhead_gib:.2f} GiB = {self.needed_gib:.2f} GiB needed; "
            f"{self.instance_type} gives {self.gpus.gib_per_gpu} GiB per {self.gpus.gpu} × "
            f"gpu_memory_utilization = {self.budget_gib:.2f} GiB "
            f"(tensor parallel {self.tensor_parallel_degree} of {self.gpus.count} GPU(s))"
        )


def instance_gpus(instance_type: str) -> InstanceGpus:
    """Look up an instance type, failing with the list of known GPU types."""
    try:
        return INSTANCE_GPUS[instance_type]
    except KeyError:
        known = ", ".join(sorted(INSTANCE_GPUS))
        raise UnknownInstanceTypeError(
            f"{instance_type!r} is not a GPU instance type in the catalog; use one of: {known}"
        ) from None


def fit_report(config: ModelConfig) -> FitReport:
    """Compute the per-GPU memory budget of ``config`` on its instance type."""
    gpus = instance_gpus(config.instance.type)
    container = config.container
    arch = config.architecture
    tp = container.tensor_parallel_degree
    if tp > gpus.count:
        raise GpuFitError(
            f"tensor_parallel_degree {tp} needs {tp} GPUs but {config.instance.type} has "
            f"{gpus.count}; choose an instance type with ≥ {tp} GPUs or lower the degree"
        )
    weights = arch.parameters_billion * 1e9 * BYTES_PER_PARAMETER[arch.dtype]
    kv_bytes = BYTES_PER_PARAMETER[arch.kv_cache_dtype or arch.dtype]
    kv_per_token = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * kv_bytes
    kv_cache = kv_per_token * container.max_model_len
    return FitReport(
        instance_type=config.instance.type,
        gpus=gpus,
        tensor_parallel_degree=tp,
        weights_gib=weights / tp / GIB,
        kv_cache_gib=kv_cache / tp / GIB,
        overhead_gib=RUNTIME_OVERHEAD_GIB,
        budget_gib=gpus.gib_per_gpu * container.gpu_memory_utilization,
    )


def check_fit(config: ModelConfig) -> FitReport:
    """Raise :class:`GpuFitError` unless one full-context sequence fits on the instance."""
    report = fit_report(config)
    if not report.fits:
        raise GpuFitError(
            f"model {config.name!r} does not fit on {config.instance.type}: {report.explain()}; "
            "choose a larger instance type, raise tensor_parallel_degree, quantize (dtype), "
            "or lower max_model_len"
        )
    return report
