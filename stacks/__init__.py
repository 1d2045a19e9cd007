"""This app's deployable stacks and the one function that wires them from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from llm_serving.config.gateway import GATEWAY_FILE, load_gateway_config
from llm_serving.config.loader import (
    ConfigError,
    load_model_configs,
    model_config_paths,
    shared_endpoint_plans,
)
from llm_serving.config.schema import EndpointHosting
from llm_serving.config.shared_endpoints import SharedEndpointError, check_region
from llm_serving.stage import Stage
from stacks.artifacts_stack import ArtifactsStack
from stacks.gateway_stack import GatewayStack
from stacks.model_stack import ModelStack
from stacks.shared_endpoint_stack import SharedEndpointStack

__all__ = [
    "GATEWAY_SKIPPED",
    "NO_ACCOUNT",
    "AppSettings",
    "ArtifactsStack",
    "BuiltApp",
    "GatewayStack",
    "ModelStack",
    "SharedEndpointStack",
    "add_compliance_checks",
    "build",
]


@dataclass(frozen=True)
class AppSettings:
    """Everything the app needs from context: which stage, where, and which configs."""

    stage: Stage
    region: str
    config_dir: Path
    account: str | None = None
    models: tuple[str, ...] | None = None


@dataclass
class BuiltApp:
    artifacts: ArtifactsStack
    gateway: GatewayStack | None
    """``None`` when ``models`` selected a subset (see :func:`build`)."""
    models: dict[str, ModelStack] = field(default_factory=dict)
    shared: dict[str, SharedEndpointStack] = field(default_factory=dict)
    """Shared endpoint name → its stack (``hosting.mode: component`` models)."""

    @property
    def skipped_gateway(self) -> bool:
        return self.gateway is None


GATEWAY_SKIPPED = (
    "note: -c models selects a subset of the model configs, so the gateway stack is not "
    "synthesized: deploying a gateway built from a subset would remove the other models' "
    "routes, alarms and dashboard widgets (and leave consumers limited to them with no route). "
    "Synthesize without -c models to deploy the gateway; for a gateway over fewer models, use "
    "a config_dir holding only those."
)
NO_ACCOUNT = (
    "note: no AWS account resolved (no credentials, no -c account): the templates are "
    "account-agnostic and synth works offline, but `cdk diff` and `cdk deploy` need credentials. "
    "To review a change without an account, run `make diff` (compares against main)."
)
"""``CDK_DEFAULT_ACCOUNT`` is "set by the CDK CLI with the default AWS account ID"
(aws-cdk-lib ``cx-api/lib/cxapi.d.ts``, ``DEFAULT_ACCOUNT_ENV``), which the CLI can only know
from credentials; unset (and no ``-c account``), it is the app's one hint that diff and deploy
will fail. Seen here: ``npx cdk ls`` with no credentials runs the app without it."""


def build(app: App, settings: AppSettings) -> BuiltApp:
    """Add the artifacts stack, one model stack per config and the gateway stack to ``app``.

    ``settings.models`` (``-c models=a,b``) synthesizes only those model stacks, for a quick
    synth or a deploy of one model; every config is still validated. The gateway routes to
    every configured model, so it is left out unless all are selected (:data:`GATEWAY_SKIPPED`).
    """
    gateway_config = load_gateway_config(settings.config_dir)
    # Model config names are their file names (load_model_configs checks that).
    gateway_file = settings.config_dir / GATEWAY_FILE
    gateway_config.check_models(
        [p.stem for p in model_config_paths(settings.config_dir)], path=gateway_file
    )
    configs = load_model_configs(settings.config_dir, only=settings.models)
    paths = model_config_paths(settings.config_dir)
    with_gateway = len(configs) == len(paths)
    every = {config.name: config for config in load_model_configs(settings.config_dir)}
    plans = shared_endpoint_plans((path, every[path.stem]) for path in paths)
    for plan in plans.values():
        try:
            check_region(plan, settings.region)
        except SharedEndpointError as exc:
            raise ConfigError(str(exc)) from None
    env = Environment(account=settings.account, region=settings.region)
    prefix = f"LlmServing-{settings.stage.value}"
    protect = settings.stage is Stage.PROD
    artifacts = ArtifactsStack(
        app,
        f"{prefix}-Artifacts",
        stage=settings.stage,
        env=env,
        termination_protection=protect,
        description="LLM serving: model artifact bucket, access logs and KMS key",
    )
    models: dict[str, ModelStack] = {}
    shared: dict[str, SharedEndpointStack] = {}
    selected = {config.name for config in configs}
    for name, plan in plans.items():
        # A shared endpoint deploys all its components together: selecting one selects all.
        if not selected.intersection(config.name for config in plan.members):
            continue
        shared[name] = SharedEndpointStack(
            app,
            f"{prefix}-SharedEndpoint-{name}",
            plan=plan,
            artifacts=artifacts.artifacts,
            stage=settings.stage,
            env=env,
            termination_protection=protect,
            description=f"LLM serving: shared SageMaker endpoint {name} and its components",
        )
    for config in configs:
        if not isinstance(config.hosting, EndpointHosting):
            continue
        models[config.name] = ModelStack(
            app,
            f"{prefix}-Model-{config.name}",
            config=config,
            artifacts=artifacts.artifacts,
            stage=settings.stage,
            env=env,
            termination_protection=protect,
            description=f"LLM serving: SageMaker endpoint for {config.name}",
        )
    if not with_gateway:
        built = BuiltApp(artifacts=artifacts, gateway=None, models=models, shared=shared)
        _tag(app, settings.stage)
        return built
    gateway = GatewayStack(
        app,
        f"{prefix}-Gateway",
        endpoints={
            **{name: stack.endpoint for name, stack in models.items()},
            **{name: c for stack in shared.values() for name, c in stack.components.items()},
        },
        config=gateway_config,
        stage=settings.stage,
        env=env,
        termination_protection=protect,
        description="LLM serving: OpenAI-compatible streaming gateway (API Gateway + Lambda)",
    )
    built = BuiltApp(artifacts=artifacts, gateway=gateway, models=models, shared=shared)
    _tag(app, settings.stage)
    return built


def _tag(app: App, stage: Stage) -> None:
    Tags.of(app).add("project", "llm-serving")
    Tags.of(app).add("stage", stage.value)


def add_compliance_checks(app: App) -> None:
    """cdk-nag AwsSolutions rules as a synth-time validation: any unacknowledged finding fails."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
