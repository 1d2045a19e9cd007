"""ExistingEndpoint: a SageMaker endpoint deployed elsewhere, as a gateway backend."""

from __future__ import annotations

from aws_cdk import Stack, Token
from aws_cdk import aws_iam as iam
from constructs import Construct
from pydantic import ValidationError

from llm_gateway.contract import Backend, ImageInput, PromptTemplate, StreamFormat


class ExistingEndpoint(Construct):
    """An endpoint this app does not deploy (another stack, another team, SageMaker JumpStart,
    the console), routed to by name. Creates no resource: it names the endpoint, says how the
    gateway talks to it, and grants invoking it.

    Use it wherever :class:`StreamingGateway` takes an ``LlmEndpoint`` (``routes=``, or
    ``endpoints=`` under its ``name`` for ``config.routes``). The dashboard does not chart it
    (it knows nothing of its instance); pass it no ``ExistingEndpoint``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoint_name: str,
        stream_format: StreamFormat = "openai",
        name: str | None = None,
        max_tokens_default: int = 1024,
        max_model_len: int | None = None,
        prompt_template: PromptTemplate | None = None,
        custom_attributes: str | None = None,
        image_input: ImageInput | None = None,
        inference_component_name: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        """
        :param endpoint_name: the SageMaker endpoint's name (same account and region as the
            stack). Required.
        :param stream_format: what the endpoint streams: ``openai`` (vLLM, LMI chat, TGI's
            Messages API), ``lmi`` (LMI rolling-batch JSON lines) or ``tgi`` (TGI's
            ``generate_stream``). Default: ``openai``.
        :param name: the model name reported to clients (``model`` in responses). Default:
            ``endpoint_name``.
        :param max_tokens_default: output limit when a request sets none. Default: 1024.
        :param max_model_len: the model's context (prompt + output), which bounds token
            reservations. Default: unknown (reservations are not clamped).
        :param prompt_template: the chat template the gateway applies for ``lmi``/``tgi``
            (required for them, refused for ``openai``). Default: None.
        :param custom_attributes: sent as ``CustomAttributes`` on every request (e.g.
            ``accept_eula=true`` for a JumpStart model). Default: None.
        :param image_input: the model takes images (``openai`` format only). Default: None.
        :param inference_component_name: invoke this inference component on the endpoint
            (sent as ``InferenceComponentName``). Default: None (the endpoint's own model).
        :param retry_after_s: with ``inference_component_name``: the ``Retry-After`` of the
            503 answered when the component has no copies. Default: None (no header).
        """
        super().__init__(scope, construct_id)
        if not Token.is_unresolved(endpoint_name) and not endpoint_name:
            raise ValueError(f"{self.node.path}: endpoint_name is empty; give the endpoint's name")
        self.endpoint_name = endpoint_name
        self.endpoint_arn = Stack.of(self).format_arn(
            service="sagemaker",
            resource="endpoint",
            # IAM matches SageMaker endpoint ARNs in lower case.
            resource_name=endpoint_name if Token.is_unresolved(endpoint_name)
            else endpoint_name.lower(),
        )  # fmt: skip
        try:
            self._backend = Backend(
                name=name or endpoint_name,
                endpoint_name=endpoint_name,
                format=stream_format,
                prompt_template=prompt_template,
                custom_attributes=custom_attributes,
                max_tokens_default=max_tokens_default,
                max_model_len=max_model_len,
                image_input=image_input,
                inference_component_name=inference_component_name,
                retry_after_s=retry_after_s,
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'props'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ValueError(f"{self.node.path}: {problems}") from None
        self.name = self._backend.name
        """The model name clients see, and the key ``endpoints=`` expects for it."""
        self.inference_component_arn: str | None = (
            Stack.of(self).format_arn(
                service="sagemaker",
                resource="inference-component",
                resource_name=inference_component_name.lower(),
            )
            if inference_component_name
            else None
        )

    def backend(self, weight: int | None = None) -> Backend:
        """How the gateway talks to this endpoint (the routing table's entry)."""
        return self._backend.model_copy(update={"weight": weight})

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` ``sagemaker:InvokeEndpoint`` (buffered and streaming) on this
        endpoint only (and its inference component, when one is named: see
        ``LlmInferenceComponent.grant_invoke``)."""
        arns = [self.endpoint_arn]
        if self.inference_component_arn is not None:
            arns.append(self.inference_component_arn)
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=arns
        )
