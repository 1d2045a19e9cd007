"""ContentGuardrail: an Amazon Bedrock guardrail the gateway applies to prompts and answers,
created from config or referenced, and the one permission that applies it."""

from __future__ import annotations

import hashlib
from typing import Any

from aws_cdk import Names, Stack
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from llm_gateway.contract import GuardrailPolicy, GuardrailRef
from llm_serving.config.gateway_safety import GuardrailConfig
from llm_serving.gateway_tables import contract_fields
from llm_serving.stage import Stage, StagePolicy


class ContentGuardrail(Construct):
    """A guardrail for ``ApplyGuardrail``: with ``config.guardrail_id`` the existing one (and
    ``config.version``), else a new ``AWS::Bedrock::Guardrail`` from ``config``'s policies,
    encrypted with its own customer-managed key (rotated), and a published
    ``AWS::Bedrock::GuardrailVersion`` that the gateway applies. A changed policy publishes a
    new version on the next deploy (the version's description carries the policy's hash;
    versions are immutable, so CloudFormation replaces it).

    Exposes ``guardrail_id``, ``guardrail_version``, ``guardrail_arn``, ``key`` (None for a
    referenced guardrail) and ``guardrail`` / ``version`` (the L1 resources, or None).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: GuardrailConfig,
        stage: Stage,
        name: str | None = None,
    ) -> None:
        """
        :param config: the guardrail (``GuardrailConfig``: policies to create one, or
            ``guardrail_id`` and ``version`` of an existing one). Required.
        :param stage: the key's lifetime (``dev``: deleted with the stack; ``prod``:
            retained). Required.
        :param name: the created guardrail's name (unique in the account and region).
            Default: derived from the construct path.
        """
        super().__init__(scope, construct_id)
        self.config = config
        self.key: kms.IKey | None = None
        self.guardrail: bedrock.CfnGuardrail | None = None
        self.version: bedrock.CfnGuardrailVersion | None = None
        stack = Stack.of(self)
        if not config.created:
            assert config.guardrail_id is not None
            assert config.version is not None
            self.guardrail_id: str = config.guardrail_id
            self.guardrail_version: str = config.version
            self.guardrail_arn: str = (
                config.guardrail_id
                if config.guardrail_id.startswith("arn:")
                else stack.format_arn(
                    service="bedrock", resource="guardrail", resource_name=config.guardrail_id
                )
            )
            return
        self.key = StagePolicy.for_stage(stage).data_key(
            self, "Key", description="Encrypts an LLM gateway guardrail's policies"
        )
        self.guardrail = bedrock.CfnGuardrail(
            self,
            "Guardrail",
            name=name or _name(self),
            description="LLM gateway content policy",
            kms_key_arn=self.key.key_arn,
            blocked_input_messaging=config.blocked_input_message,
            blocked_outputs_messaging=config.blocked_output_message,
            **_policies(config),
        )
        policy_hash = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
        self.version = bedrock.CfnGuardrailVersion(
            self,
            "Version",
            guardrail_identifier=self.guardrail.attr_guardrail_id,
            description=f"Published by the LLM gateway stack; policy {policy_hash}",
        )
        self.guardrail_id = self.guardrail.attr_guardrail_id
        self.guardrail_version = self.version.attr_version
        self.guardrail_arn = self.guardrail.attr_guardrail_arn

    def ref(self, policy: GuardrailPolicy) -> GuardrailRef:
        """The routing table's entry for a route applying this guardrail under ``policy``."""
        return GuardrailRef(
            guardrail_id=self.guardrail_id,
            guardrail_version=self.guardrail_version,
            **contract_fields(policy, GuardrailPolicy),
        )

    def grant_apply(self, grantee: iam.IGrantable) -> iam.Grant:
        """``bedrock:ApplyGuardrail`` on this guardrail only (its one resource type,
        ``guardrail``: Service Authorization Reference, Amazon Bedrock), and ``kms:Decrypt``
        on its key, which users of a guardrail under a customer-managed key need
        (https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-permissions-kms.html:
        "AllowRoleToUseEncryptedGuardrailDuringInference")."""
        grant = iam.Grant.add_to_principal(
            grantee=grantee, actions=["bedrock:ApplyGuardrail"], resource_arns=[self.guardrail_arn]
        )
        if self.key is not None:
            grant = grant.combine(self.key.grant(grantee, "kms:Decrypt"))
        return grant


def _name(scope: Construct) -> str:
    # GuardrailName: 1–50 characters of [0-9a-zA-Z-_] (botocore bedrock CreateGuardrail).
    return Names.unique_resource_name(scope, max_length=50, separator="-")


def _policies(config: GuardrailConfig) -> dict[str, Any]:
    """The CfnGuardrail policy properties ``config`` sets (unset ones are left out)."""
    G = bedrock.CfnGuardrail  # noqa: N806
    policies: dict[str, Any] = {}
    if config.content_filters:
        policies["content_policy_config"] = G.ContentPolicyConfigProperty(
            filters_config=[
                G.ContentFilterConfigProperty(
                    type=kind, input_strength=f.input, output_strength=f.output
                )
                for kind, f in config.content_filters.items()
            ]
        )
    if config.denied_topics:
        policies["topic_policy_config"] = G.TopicPolicyConfigProperty(
            topics_config=[
                G.TopicConfigProperty(
                    name=t.name,
                    definition=t.definition,
                    examples=list(t.examples) or None,
                    type="DENY",
                )
                for t in config.denied_topics
            ]
        )
    if config.words or config.profanity:
        policies["word_policy_config"] = G.WordPolicyConfigProperty(
            words_config=[G.WordConfigProperty(text=w) for w in config.words] or None,
            managed_word_lists_config=(
                [G.ManagedWordsConfigProperty(type="PROFANITY")] if config.profanity else None
            ),
        )
    if config.pii:
        policies["sensitive_information_policy_config"] = (
            G.SensitiveInformationPolicyConfigProperty(
                pii_entities_config=[
                    G.PiiEntityConfigProperty(type=kind, action="BLOCK") for kind in config.pii
                ]
            )
        )
    return policies
