"""Gateway config: Amazon Bedrock guardrails (created from config or referenced) and the
route-level settings that apply them. The limits and value sets below are those of the
Bedrock control-plane API model (botocore ``bedrock/2023-04-20/service-2.json``: shapes
``GuardrailContentFilterType``, ``GuardrailFilterStrength``, ``GuardrailPiiEntityType``,
``GuardrailTopicName`` …);
``tests/test_guardrails.py`` compares them with the installed botocore."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from llm_gateway.contract import GuardrailPolicy
from llm_serving.config.gateway_platform import _Strict

ContentFilterType = Literal["SEXUAL", "VIOLENCE", "HATE", "INSULTS", "MISCONDUCT", "PROMPT_ATTACK"]
FilterStrength = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
PiiEntityType = Literal[
    "ADDRESS", "AGE", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "CA_HEALTH_NUMBER",
    "CA_SOCIAL_INSURANCE_NUMBER", "CREDIT_DEBIT_CARD_CVV", "CREDIT_DEBIT_CARD_EXPIRY",
    "CREDIT_DEBIT_CARD_NUMBER", "DRIVER_ID", "EMAIL", "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
    "IP_ADDRESS", "LICENSE_PLATE", "MAC_ADDRESS", "NAME", "PASSWORD", "PHONE", "PIN",
    "SWIFT_CODE", "UK_NATIONAL_HEALTH_SERVICE_NUMBER", "UK_NATIONAL_INSURANCE_NUMBER",
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER", "URL", "USERNAME", "US_BANK_ACCOUNT_NUMBER",
    "US_BANK_ROUTING_NUMBER", "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", "US_PASSPORT_NUMBER",
    "US_SOCIAL_SECURITY_NUMBER", "VEHICLE_IDENTIFICATION_NUMBER",
]  # fmt: skip

_Text = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class ContentFilter(_Strict):
    """One content filter: how strongly prompts and answers are filtered for a category."""

    input: FilterStrength = Field("HIGH", description="Strength on prompts.")
    output: FilterStrength = Field(
        "HIGH", description="Strength on answers (must be NONE for PROMPT_ATTACK)."
    )


class DeniedTopic(_Strict):
    """A subject the model must not discuss."""

    name: Annotated[str, StringConstraints(pattern=r"^[0-9a-zA-Z-_ !?.]{1,100}$")] = Field(
        description="Short name (letters, digits, spaces, - _ ! ? .)."
    )
    definition: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="What the topic covers, in plain words."
    )
    examples: tuple[_Text, ...] = Field(
        (), max_length=5, description="Up to five example prompts on the topic."
    )


class GuardrailConfig(_Strict):
    """A guardrail: either created by the gateway stack from the policies below, or an
    existing one referenced by ``guardrail_id`` (then no policy may be set)."""

    guardrail_id: str | None = Field(
        None, min_length=1, description="An existing guardrail's id or ARN: use it, create none."
    )
    version: str | None = Field(
        None,
        pattern=r"^(DRAFT|[1-9][0-9]{0,7})$",
        description=(
            "With guardrail_id: the version to apply (a number, or DRAFT: the working draft, "
            "which changes under you). Created guardrails use a version published by the stack."
        ),
    )
    content_filters: dict[ContentFilterType, ContentFilter] = Field(
        default_factory=dict, description="Category → strengths (e.g. HATE: {input: HIGH})."
    )
    denied_topics: tuple[DeniedTopic, ...] = Field(
        (), max_length=30, description="Subjects refused in prompts and answers (up to 30)."
    )
    words: tuple[_Text, ...] = Field(
        (), max_length=10000, description="Words or phrases to block, exactly."
    )
    profanity: bool = Field(False, description="Block AWS's managed profanity word list.")
    pii: tuple[PiiEntityType, ...] = Field(
        (),
        description=(
            "PII types that block a prompt or an answer (e.g. EMAIL, US_SOCIAL_SECURITY_NUMBER). "
            "Blocked, not masked: the gateway releases streamed text only after it passed, so "
            "it does not splice in Bedrock's masked rewrite (ANONYMIZE)."
        ),
    )
    blocked_input_message: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        "Sorry, this request is not allowed by the content policy.",
        description="What a client is told when its prompt is blocked.",
    )
    blocked_output_message: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        "Sorry, the answer was withheld by the content policy.",
        description="What the guardrail returns when an answer is blocked.",
    )

    @model_validator(mode="after")
    def _created_or_referenced(self) -> GuardrailConfig:
        policies = {
            "content_filters": bool(self.content_filters),
            "denied_topics": bool(self.denied_topics),
            "words": bool(self.words),
            "profanity": self.profanity,
            "pii": bool(self.pii),
        }
        if self.guardrail_id is not None:
            if self.version is None:
                raise ValueError(
                    "guardrail_id needs a version; fix: set version (a published number, or DRAFT)"
                )
            used = [name for name, on in policies.items() if on]
            if used:
                raise ValueError(
                    f"{used} define a guardrail to create, but guardrail_id references an "
                    "existing one; fix: keep one of the two"
                )
            return self
        if self.version is not None:
            raise ValueError(
                "version applies only with guardrail_id (a created guardrail is versioned by "
                "the stack); fix: remove it"
            )
        if not any(policies.values()):
            raise ValueError(
                "a guardrail to create needs at least one policy (content_filters, "
                "denied_topics, words, profanity or pii); fix: add one, or reference an "
                "existing guardrail with guardrail_id and version"
            )
        attack = self.content_filters.get("PROMPT_ATTACK")
        if attack is not None and attack.output != "NONE":
            raise ValueError(
                "content_filters.PROMPT_ATTACK.output must be NONE (Bedrock filters prompt "
                "attacks on input only); fix: set output: NONE"
            )
        return self

    @property
    def created(self) -> bool:
        return self.guardrail_id is None


class RouteGuardrail(GuardrailPolicy):
    """A route's guardrail: which one (a key of ``guardrails``) and how it is applied."""

    name: str = Field(description="A key of the gateway config's ``guardrails``.")
