"""The SageMaker model of one :class:`ModelConfig`, shared by the dedicated endpoint
(:class:`~llm_serving.endpoint.LlmEndpoint`) and the inference component
(:class:`~llm_serving.component.LlmInferenceComponent`): execution role, ``CfnModel`` and the LMI
package."""

from __future__ import annotations

from aws_cdk import SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_serving._nag import skip_checkov
from llm_serving.artifacts import ModelArtifacts
from llm_serving.config.images import ImageSpec
from llm_serving.config.schema import HubWeights, LmiContainer, ModelConfig, S3Weights
from llm_serving.container_env import container_env
from llm_serving.endpoint_network import (
    VPC_INTERFACE_REASON,
    VPC_WILDCARD_REASON,
    EndpointNetwork,
    grant_vpc_access,
)
from llm_serving.endpoint_role import (
    acknowledge_role_findings,
    execution_role,
    grant_serving,
    role_policy,
    weights_finding,
)
from llm_serving.image_uri import image_uri
from llm_serving.lmi_package import LmiModelPackage


class ModelParts(Construct):
    """The model's execution role and ``CfnModel`` (a base: the subclass sets ``config``,
    ``image``, ``network`` and ``log_group`` first)."""

    config: ModelConfig
    image: ImageSpec
    network: EndpointNetwork | None
    log_group: logs.ILogGroup
    role: iam.IRole
    serving_properties: str | None
    network_isolation: bool

    # --- IAM -------------------------------------------------------------------------------

    def _execution_role(self, artifacts: ModelArtifacts, existing: iam.IRole | None) -> iam.IRole:
        config = self.config
        role = execution_role(self, existing=existing, model_name=config.name)
        grant_serving(self, role, image=self.image, log_group=self.log_group)
        findings: dict[str, str] = {}
        if isinstance(config.weights, S3Weights):
            prefix = config.weights.prefix
            artifacts.grant_read_prefix(role, prefix)
            finding, reason = weights_finding(
                self, artifacts.bucket.arn_for_objects(f"{prefix}*"), prefix
            )
            findings[finding] = reason
        if self.network is not None:
            findings[grant_vpc_access(self, role, self.network)] = VPC_INTERFACE_REASON
        acknowledge_role_findings(
            self,
            role,
            log_group=self.log_group,
            findings=findings,
            vpc_wildcard_reason=VPC_WILDCARD_REASON if self.network is not None else "",
        )
        return role

    # --- Model -----------------------------------------------------------------------------

    def _model(self, artifacts: ModelArtifacts) -> sagemaker.CfnModel:
        config = self.config
        weights = config.weights
        hf_token: str | None = None
        if isinstance(weights, HubWeights) and weights.token_secret_name:
            # The template holds only a {{resolve:secretsmanager:…}} dynamic reference;
            # CloudFormation resolves it at deploy time. SageMaker then stores the resolved
            # value in the model's environment, readable with sagemaker:DescribeModel — which
            # is why the README recommends S3 weights for gated models in prod.
            secret = SecretValue.secrets_manager(weights.token_secret_name)
            hf_token = secret.unsafe_unwrap()
        s3_uri = artifacts.s3_uri(weights.prefix) if isinstance(weights, S3Weights) else None
        is_lmi = isinstance(config.container, LmiContainer)
        container = sagemaker.CfnModel.ContainerDefinitionProperty(
            image=image_uri(self, self.image),
            environment=container_env(config, s3_weights_uri=s3_uri, hf_token=hf_token),
            model_data_url=self._lmi_package_url() if is_lmi else None,
            model_data_source=(
                sagemaker.CfnModel.ModelDataSourceProperty(
                    s3_data_source=sagemaker.CfnModel.S3DataSourceProperty(
                        s3_uri=s3_uri, s3_data_type="S3Prefix", compression_type="None"
                    )
                )
                if s3_uri is not None and not is_lmi
                else None
            ),
        )
        # The container needs the network only when it downloads weights itself (from the Hub,
        # or LMI fetching its S3 model_id with the role's credentials); the config's
        # instance.network_isolation can only turn that off (the schema refuses true otherwise).
        automatic = isinstance(weights, S3Weights) and not is_lmi
        explicit = config.instance.network_isolation
        self.network_isolation = automatic if explicit is None else explicit
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=container,
            enable_network_isolation=self.network_isolation,
            vpc_config=self.network.vpc_config if self.network is not None else None,
        )
        if not self.network_isolation:
            skip_checkov(
                model,
                "CKV_AWS_370",
                "The container downloads its weights itself: from the Hugging Face Hub "
                "(weights.source: hub) or, for LMI, its S3 model_id with the execution role. "
                "Use S3 weights with vLLM or TGI for network isolation."
                if not automatic
                else "Turned off on purpose in the model config (instance.network_isolation: "
                "false): the container needs the network for more than its weights.",
            )
        # SageMaker checks the role's permissions on CreateModel: wait for its policy too.
        policy = role_policy(self.role)
        if policy is not None:
            model.node.add_dependency(policy)
        return model

    def _lmi_package_url(self) -> str:
        package = LmiModelPackage(self, "LmiPackage", config=self.config)
        self.serving_properties = package.serving_properties
        asset = package.asset
        # Only this object; Asset.grant_read would add wildcard actions on the whole bucket.
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["s3:GetObject"],
            resource_arns=[asset.bucket.arn_for_objects(asset.s3_object_key)],
        )
        return asset.s3_object_url
