"""Shared endpoints: which model configs are packed on which endpoint, checked across files.

A shared endpoint is declared once: in one of the model configs hosted on it
(``hosting.endpoint: {name, min_instances, max_instances, initial_instances, routing}``), whose
``instance`` (type, AMI, timeouts) is the endpoint's. The other configs name it
(``hosting.endpoint: <name>``). :func:`plan_shared_endpoints` refuses, naming both files: a
second declaration of the same name, a reference to an undeclared name, an instance type or
host AMI that differs from the declaring config's, copies that cannot fit the instance
(accelerators per copy vs GPUs, tensor parallelism vs accelerators per copy, the initial copies
of all members vs the GPUs of ``max_instances``), and prefix-aware routing over a model without
prefix caching. :func:`check_region` refuses scale-to-zero where it is known to be refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llm_serving.config.deploy_rules import DeployRuleError, plan_deployment
from llm_serving.config.gpus import InstanceGpus, instance_gpus
from llm_serving.config.schema import ComponentHosting, ModelConfig, SharedEndpoint

# Regions where SageMaker refuses ManagedInstanceScaling.MinInstanceCount 0. AWS publishes no
# list of the regions that support inference components or scaling them to zero (none found
# in the SageMaker developer guide, the API reference or the botocore models, 2026-11), so only
# regions with a report of the refusal are listed, each with its source; elsewhere the deploy
# itself is the test.
SCALE_TO_ZERO_REFUSED: dict[str, str] = {
    "eu-west-3": (
        'CreateEndpointConfig answered "Min instance count needs to be greater than 0 for '
        'enabled managed instance scaling" (field report, stdapi-ai/stdapi.ai#43, 2026-08-27; '
        "the same call was accepted in us-east-1)"
    ),
}


class SharedEndpointError(ValueError):
    """Model configs disagree about a shared endpoint; the message names the files."""


@dataclass(frozen=True)
class SharedEndpointPlan:
    """One shared endpoint: its declaration, where it is declared, and the models on it."""

    declaration: SharedEndpoint
    declared_in: str
    owner: ModelConfig
    members: tuple[ModelConfig, ...]
    gpus: InstanceGpus
    host_ami: str

    @property
    def name(self) -> str:
        return self.declaration.name


def _component(config: ModelConfig) -> ComponentHosting | None:
    hosting = config.hosting
    return hosting if isinstance(hosting, ComponentHosting) else None


def plan_shared_endpoints(
    hosted: Sequence[tuple[str, ModelConfig]],
) -> dict[str, SharedEndpointPlan]:
    """The shared endpoints of ``hosted`` (``(file, config)`` pairs; the file is only used in
    messages), checked across the configs; raises :class:`SharedEndpointError`."""
    declared: dict[str, tuple[str, ModelConfig, SharedEndpoint]] = {}
    for where, config in hosted:
        component = _component(config)
        if component is None or component.declaration is None:
            continue
        name = component.declaration.name
        if name in declared:
            first = declared[name][0]
            raise SharedEndpointError(
                f"{where}: hosting.endpoint: shared endpoint {name!r} is declared here and in "
                f"{first}; fix: declare its settings in one file and write "
                f"hosting.endpoint: {name} in the other"
            )
        declared[name] = (where, config, component.declaration)
    members: dict[str, list[tuple[str, ModelConfig]]] = {name: [] for name in declared}
    for where, config in hosted:
        component = _component(config)
        if component is None:
            continue
        name = component.endpoint_name
        if name not in declared:
            known = sorted(declared) or "none"
            raise SharedEndpointError(
                f"{where}: hosting.endpoint: shared endpoint {name!r} is not declared in any "
                f"model config (declared: {known}); fix: declare it in one of the configs "
                "hosted on it (hosting.endpoint: {name: ..., max_instances: ...})"
            )
        members[name].append((where, config))
    return {name: _plan(declared[name], members[name]) for name in declared}


def _host_ami(where: str, config: ModelConfig) -> str:
    try:
        return plan_deployment(config).host_ami.name
    except DeployRuleError as exc:
        raise SharedEndpointError(exc.located(where)) from None


def _plan(
    declaration: tuple[str, ModelConfig, SharedEndpoint], members: list[tuple[str, ModelConfig]]
) -> SharedEndpointPlan:
    declared_in, owner, endpoint = declaration
    gpus = instance_gpus(owner.instance.type)
    host_ami = _host_ami(declared_in, owner)
    needed = 0
    for where, config in members:
        component = _component(config)
        assert component is not None
        if config.instance.type != owner.instance.type:
            raise SharedEndpointError(
                f"{where}: instance.type: {config.instance.type} differs from shared endpoint "
                f"{endpoint.name!r}'s {owner.instance.type} (declared in {declared_in}); fix: "
                f"set instance.type: {owner.instance.type}, or host the model elsewhere"
            )
        ami = _host_ami(where, config)
        if ami != host_ami:
            raise SharedEndpointError(
                f"{where}: instance.inference_ami_version: this model needs {ami} but shared "
                f"endpoint {endpoint.name!r} runs {host_ami} (declared in {declared_in}); one "
                "host AMI serves every component: use images of the same CUDA major version"
            )
        accelerators = component.accelerators_per_copy
        if accelerators > gpus.count:
            raise SharedEndpointError(
                f"{where}: hosting.accelerators_per_copy: {accelerators} GPUs per copy, but "
                f"{owner.instance.type} has {gpus.count}; fix: lower it or use a larger "
                "instance type for the shared endpoint"
            )
        tp = config.container.tensor_parallel_degree
        if tp > accelerators:
            raise SharedEndpointError(
                f"{where}: hosting.accelerators_per_copy: a copy reserves {accelerators} GPU(s) "
                f"but container.tensor_parallel_degree spans {tp}; fix: set "
                f"accelerators_per_copy: {tp}"
            )
        if endpoint.routing.strategy == "prefix_aware" and not config.prefix_caching:
            raise SharedEndpointError(
                f"{where}: shared endpoint {endpoint.name!r} routes prefix_aware (declared in "
                f"{declared_in}) but this model's engine has prefix caching off; fix: set "
                "container.engine_args.enable-prefix-caching: true, or change the endpoint's "
                "routing.strategy"
            )
        needed += component.copies.initial * accelerators
    available = gpus.count * endpoint.max_instances
    if needed > available:
        raise SharedEndpointError(
            f"{declared_in}: hosting.endpoint.max_instances: the initial copies of the models "
            f"on {endpoint.name!r} reserve {needed} GPU(s) but {endpoint.max_instances} × "
            f"{owner.instance.type} has {available}; fix: raise max_instances or lower "
            "copies.initial"
        )
    return SharedEndpointPlan(
        declaration=endpoint,
        declared_in=declared_in,
        owner=owner,
        members=tuple(config for _, config in members),
        gpus=gpus,
        host_ami=host_ami,
    )


def check_region(plan: SharedEndpointPlan, region: str) -> None:
    """Refuse ``min_instances: 0`` where it is known to be refused
    (:data:`SCALE_TO_ZERO_REFUSED`)."""
    reason = SCALE_TO_ZERO_REFUSED.get(region)
    if reason is not None and plan.declaration.min_instances == 0:
        raise SharedEndpointError(
            f"{plan.declared_in}: hosting.endpoint.min_instances: 0 (scale to zero) is refused "
            f"in {region}: {reason}; fix: deploy to another region (e.g. us-east-1) or set "
            "min_instances: 1"
        )
