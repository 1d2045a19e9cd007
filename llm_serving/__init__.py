"""Constructs for self-hosted LLM serving on SageMaker GPU endpoints.

Public API: :class:`ModelArtifacts`, :class:`LlmEndpoint`, :class:`SharedLlmEndpoint` and
:class:`LlmInferenceComponent` (models as inference components that scale to zero on a shared
endpoint), :class:`ExistingEndpoint` (an
endpoint deployed elsewhere, as a gateway backend), :class:`LmiModelPackage`,
:class:`StreamingGateway` (with :class:`GatewayRoute`/:class:`RouteBackend` for its routes,
:func:`routes_from_config`, :class:`QuotaTable`, :class:`ContentGuardrail` (a Bedrock
guardrail applied per route), :class:`ResponseCacheTable` and :func:`gateway_code`, its
offline-bundled function code), :class:`InferenceDashboard` (dashboard, alarms and their SNS topic),
:class:`Stage`, :func:`add_vpc_endpoints` (the VPC endpoints a VPC without internet access
needs), and the typed configuration in :mod:`llm_serving.config`.

Distributed as ``llm-serving-cdk``, together with the gateway's runtime package
``llm_gateway``, which :func:`gateway_code` bundles.
"""

from llm_serving.artifacts import ModelArtifacts
from llm_serving.bundling import BundlingError, GatewayLocalBundler, gateway_code
from llm_serving.component import LlmInferenceComponent
from llm_serving.dashboard import InferenceDashboard
from llm_serving.endpoint import LlmEndpoint
from llm_serving.existing_endpoint import ExistingEndpoint
from llm_serving.gateway import StreamingGateway
from llm_serving.gateway_routes import GatewayRoute, RouteBackend, routes_from_config
from llm_serving.guardrail import ContentGuardrail
from llm_serving.lmi_package import LmiModelPackage
from llm_serving.quota_table import QuotaTable
from llm_serving.response_cache_table import ResponseCacheTable
from llm_serving.shared_endpoint import SharedLlmEndpoint
from llm_serving.stage import Stage, StagePolicy
from llm_serving.vpc_endpoints import VpcEndpoints, add_vpc_endpoints

__version__ = "0.1.0"
"""The distribution's version (semantic versioning; pyproject.toml reads it from here)."""

__all__ = [
    "BundlingError",
    "ContentGuardrail",
    "ExistingEndpoint",
    "GatewayLocalBundler",
    "GatewayRoute",
    "InferenceDashboard",
    "LlmEndpoint",
    "LlmInferenceComponent",
    "LmiModelPackage",
    "ModelArtifacts",
    "QuotaTable",
    "ResponseCacheTable",
    "RouteBackend",
    "SharedLlmEndpoint",
    "Stage",
    "StagePolicy",
    "StreamingGateway",
    "VpcEndpoints",
    "__version__",
    "add_vpc_endpoints",
    "gateway_code",
    "routes_from_config",
]
