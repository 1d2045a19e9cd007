"""Constructs for self-hosted LLM serving on SageMaker GPU endpoints.

Public API: :class:`ModelArtifacts`, :class:`LlmEndpoint`, :class:`LmiModelPackage`,
:class:`Stage`, and the typed configuration in :mod:`llm_serving.config`.
"""

from llm_serving.artifacts import ModelArtifacts
from llm_serving.endpoint import LlmEndpoint
from llm_serving.lmi_package import LmiModelPackage
from llm_serving.stage import Stage, StagePolicy

__all__ = ["LlmEndpoint", "LmiModelPackage", "ModelArtifacts", "Stage", "StagePolicy"]
