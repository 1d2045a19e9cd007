"""Render DJL-LMI ``serving.properties`` from a model config and package it as an S3 asset."""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from pathlib import Path

from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from llm_serving.config.schema import EngineArgValue, HubWeights, LmiContainer, ModelConfig

_LMI_DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


def _value(value: EngineArgValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_serving_properties(config: ModelConfig) -> str:
    """``serving.properties`` text for an LMI model. The model id is set here for Hub weights;
    S3 weights are passed as ``OPTION_MODEL_ID`` in the environment (the bucket name is only
    known at deploy time)."""
    container = config.container
    if not isinstance(container, LmiContainer):
        raise TypeError(f"{config.name}: serving.properties is only for the lmi family")
    entries: dict[str, str] = {"engine": "Python"}
    if isinstance(config.weights, HubWeights):
        entries["option.model_id"] = config.weights.hub_id
        if config.weights.revision:
            entries["option.revision"] = config.weights.revision
    entries.update(
        {
            "option.tensor_parallel_degree": str(container.tensor_parallel_degree),
            "option.rolling_batch": container.rolling_batch,
            "option.max_rolling_batch_size": str(container.max_rolling_batch_size),
            "option.max_model_len": str(container.max_model_len),
            "option.gpu_memory_utilization": str(container.gpu_memory_utilization),
            "option.model_loading_timeout": str(container.model_loading_timeout_s),
        }
    )
    if config.architecture.dtype in _LMI_DTYPES:
        entries["option.dtype"] = _LMI_DTYPES[config.architecture.dtype]
    entries.update({f"option.{k}": _value(v) for k, v in sorted(container.options.items())})
    return "".join(f"{key}={value}\n" for key, value in entries.items())


def build_model_tarball(serving_properties: str) -> bytes:
    """A byte-for-byte reproducible ``model.tar.gz`` (fixed mtimes and owners), so the asset
    hash, and therefore ``cdk diff``, changes only when the properties change."""
    payload = serving_properties.encode("utf-8")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("serving.properties")
        info.size = len(payload)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


class LmiModelPackage(Construct):
    """``model.tar.gz`` holding the rendered ``serving.properties``, uploaded by ``cdk deploy``
    to the bootstrap asset bucket. ``.asset`` is the S3 asset; ``.serving_properties`` the text.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: ModelConfig) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id.
        :param config: an LMI-family ``ModelConfig`` (``TypeError`` otherwise). Required.
        """
        super().__init__(scope, construct_id)
        self.serving_properties = render_serving_properties(config)
        staging = Path(tempfile.mkdtemp(prefix=f"lmi-{config.name}-"))
        tarball = staging / "model.tar.gz"
        tarball.write_bytes(build_model_tarball(self.serving_properties))
        self.asset = s3_assets.Asset(self, "Asset", path=str(tarball))
