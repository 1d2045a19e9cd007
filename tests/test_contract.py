"""The construct library and the gateway runtime share one wire contract
(``lambda/llm_gateway/contract.py``). These tests prove the construction: the environment the
synthesized function receives is parsed by the runtime's own ``Settings`` into exactly the
tables the construct built, names no variable the contract does not declare, and the dashboard
charts only metrics the contract declares."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Template

from llm_gateway import contract
from llm_gateway.settings import Settings
from llm_serving.config import load_gateway_config, load_model_configs
from llm_serving.gateway_tables import tables_from_configs
from stacks import BuiltApp
from tests.conftest import CONFIG_DIR
from tests.test_gateway import _function_env, _join, _placeholder_key_ids

# The Lambda Web Adapter's own variables (awslabs/aws-lambda-web-adapter README).
ADAPTER_ENV = {
    "AWS_LAMBDA_EXEC_WRAPPER",
    "AWS_LWA_INVOKE_MODE",
    "AWS_LWA_PORT",
    "AWS_LWA_READINESS_CHECK_PATH",
}
CONTRACT_ENV = {value for name, value in vars(contract).items() if name.endswith("_ENV")}


@pytest.fixture(scope="module")
def built(default_app: Any) -> BuiltApp:
    _, app = default_app
    assert isinstance(app, BuiltApp)
    return app


def _resolved_environment(built: BuiltApp) -> tuple[dict[str, str], dict[str, str]]:
    """The function's environment with each API key id replaced by a stand-in (the gateway
    tests' own), and consumer name → stand-in id."""
    assert built.gateway is not None
    template = Template.from_stack(built.gateway)
    ids = _placeholder_key_ids(template)
    env = {
        name: "quota-table" if isinstance(value, dict) and "Ref" in value else _join(value, ids)
        for name, value in _function_env(template).items()
    }
    stand_in = {
        name: ids[built.gateway.get_logical_id(key.node.default_child)]  # type: ignore[arg-type]
        for name, key in built.gateway.gateway.api_keys.items()
    }
    return env, stand_in


def test_the_function_environment_is_the_contract(built: BuiltApp) -> None:
    env, stand_in = _resolved_environment(built)
    assert set(env) - ADAPTER_ENV <= CONTRACT_ENV, "a variable the runtime does not declare"
    # Unset here by design: local runs only, and the cache table (only when a route caches:
    # tests/test_guardrails_cache_synth.py).
    unset = {contract.LOCAL_CONSUMER_ENV, contract.CACHE_TABLE_ENV}
    assert CONTRACT_ENV - set(env) == unset, "a contract variable unset"
    settings = Settings.from_env(env)
    assert built.gateway is not None
    gateway = built.gateway.gateway
    assert settings.routes == gateway.route_table
    assert settings.consumers == gateway.consumer_table(key_ids=stand_in)
    assert env[contract.ROUTES_ENV] == gateway.route_table.model_dump_json()
    assert env[contract.METRIC_NAMESPACE_ENV] == contract.METRIC_NAMESPACE


def test_the_pure_tables_equal_the_constructs_but_for_endpoint_names(built: BuiltApp) -> None:
    """``make local`` builds the tables from the configs alone; given the endpoints' names it
    builds exactly what the construct deploys."""
    assert built.gateway is not None
    gateway = built.gateway.gateway
    names = {name: stack.endpoint.endpoint_name for name, stack in built.models.items()}
    routes, consumers = tables_from_configs(
        load_model_configs(CONFIG_DIR), load_gateway_config(CONFIG_DIR), endpoint_names=names
    )
    assert routes == gateway.route_table
    assert consumers == gateway.consumer_table()


def test_the_dashboard_charts_only_contract_metrics(built: BuiltApp) -> None:
    assert built.gateway is not None
    template = Template.from_stack(built.gateway)
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = "".join(
        p for p in dashboard["Properties"]["DashboardBody"]["Fn::Join"][1] if isinstance(p, str)
    )
    namespace = json.dumps(contract.METRIC_NAMESPACE)
    charted = set(re.findall(rf'\[{re.escape(namespace)},"(\w+)"', body))
    charted |= set(re.findall(r'MetricName=\\"(\w+)\\"', body))  # the errors SEARCH
    # The guardrail and cache metrics are charted for routes that use them (none here;
    # tests/test_guardrails_cache_synth.py checks them).
    # NoCapacity is charted per inference component (tests/test_component.py).
    per_feature = {"Duration", "GuardrailActions", "CacheHits", "CacheMisses", "NoCapacity"}
    assert charted == {str(m) for m in contract.Metric} - per_feature, charted
