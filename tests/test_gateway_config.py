"""gateway.yaml's tiers, consumers, routes and fallback: validation with file/field/fix
messages, the checks against the model configs in ``stacks.build``, and the routes and
consumers it produces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Template

from llm_gateway.contract import RouteTable
from llm_serving.config import ConfigError, GatewayConfig, load_gateway_config
from llm_serving.config.gateway import pascal_case
from tests.conftest import CONFIG_DIR, build_default, variant

DEEPSEEK = "deepseek-r1-distill-qwen-7b"
LLAMA = "llama-2-13b-chat"
CANARY = "deepseek-canary"

TIERS = {
    "gold": {"rate_limit": 5, "burst_limit": 10, "default_reservation": 100},
    "free": {"rate_limit": 1, "burst_limit": 1, "requests_per_day": 10, "default_reservation": 10},
}


def _load(tmp_path: Path, data: dict[str, Any]) -> GatewayConfig:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_gateway_config(tmp_path)


def _config_dir(tmp_path: Path, gateway: dict[str, Any], *, canary: bool = False) -> Path:
    """The shipped model configs (plus a DeepSeek canary) and this gateway.yaml."""
    directory = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, directory)
    if canary:
        (directory / f"{CANARY}.yaml").write_text(yaml.safe_dump(variant(DEEPSEEK, name=CANARY)))
    (directory / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    return directory


# --- Defaults ---------------------------------------------------------------------------------


def test_defaults_are_two_tiers_one_default_consumer_and_a_route_per_model() -> None:
    config = GatewayConfig()
    assert list(config.tiers) == ["standard", "trial"]
    assert [(c.name, c.tier, c.routes) for c in config.consumers] == [("default", "standard", None)]
    assert config.routes is None
    assert (config.fallback.cooldown_failures, config.fallback.cooldown_s) == (3, 30.0)
    assert config.tiers["standard"].request_quota == (10_000, "DAY")
    routes = config.effective_routes([DEEPSEEK, LLAMA])
    assert [(r.model, [b.model for b in r.backends]) for r in routes] == [
        (DEEPSEEK, [DEEPSEEK]),
        (LLAMA, [LLAMA]),
    ]


def test_shipped_yaml_documents_the_new_sections() -> None:
    text = (CONFIG_DIR / "gateway.yaml").read_text()
    for section in ("tiers:", "consumers:", "# routes:", "fallback:"):
        assert f"\n{section}" in text
    assert load_gateway_config(CONFIG_DIR) == GatewayConfig.model_validate(
        {"api": {"account_cloudwatch_role": True}}
    )  # app opts in


def test_monthly_quota_and_no_quota(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "tiers": {
                "monthly": {**TIERS["gold"], "requests_per_month": 1000},
                "open": TIERS["gold"],
            },
            "consumers": [{"name": "a", "tier": "monthly"}],
        },
    )
    assert config.tiers["monthly"].request_quota == (1000, "MONTH")
    assert config.tiers["open"].request_quota is None


@pytest.mark.parametrize(
    ("name", "pascal"), [("default", "Default"), ("team-a", "TeamA"), ("ci-2", "Ci2")]
)
def test_consumer_names_become_cloudformation_ids(name: str, pascal: str) -> None:
    assert pascal_case(name) == pascal


# --- Errors name the file, the field and the fix -----------------------------------------

# (id, gateway.yaml data, field, words of the fix)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown tier", {"tiers": TIERS, "consumers": [{"name": "a", "tier": "silver"}]},
     "consumers.0.tier", "use one of ['free', 'gold'] or add it under tiers"),
    ("default consumer's tier", {"tiers": TIERS}, "consumers.0.tier",
     "consumer 'default' (the default consumer) has unknown tier 'standard'"),
    ("duplicate consumer", {"tiers": TIERS, "consumers": [
        {"name": "a", "tier": "gold"}, {"name": "b", "tier": "gold"},
        {"name": "a", "tier": "free"}]},
     "consumers.2.name", "is listed twice; fix: give each consumer a distinct name"),
    ("same cloudformation id", {"tiers": TIERS, "consumers": [
        {"name": "team-a1", "tier": "gold"}, {"name": "team-a-1", "tier": "gold"}]},
     "consumers.1.name", "same CloudFormation id 'TeamA1'"),
    ("both request quotas", {"tiers": {"gold": {**TIERS["gold"], "requests_per_day": 1,
                                                "requests_per_month": 30}}, "consumers": []},
     "tiers.gold", "fix: keep one of them"),
    ("reservation over quota", {"tiers": {"gold": {**TIERS["gold"], "tokens_per_day": 50}},
                                "consumers": []},
     "tiers.gold", "lower default_reservation or raise tokens_per_day"),
    ("bad consumer name", {"tiers": TIERS, "consumers": [{"name": "Team_A", "tier": "gold"}]},
     "consumers.0.name", "pattern"),
    ("bad tier name", {"tiers": {"Gold": TIERS["gold"]}, "consumers": []},
     "tiers.Gold.[key]", "pattern"),
    ("no tiers", {"tiers": {}, "consumers": []}, "tiers", "correct the value"),
    ("tier without throttle", {"tiers": {"gold": {"default_reservation": 1}}, "consumers": []},
     "tiers.gold.rate_limit", "add this field"),
    ("repeated consumer route", {"consumers": [
        {"name": "a", "tier": "standard", "routes": ["m", "m"]}]},
     "consumers.0.routes", "list each alias once"),
    ("consumer route not routed", {
        "routes": [{"model": "chat", "backends": [{"model": DEEPSEEK}]}],
        "consumers": [{"name": "a", "tier": "standard", "routes": ["chat", "code"]}]},
     "consumers.0.routes", "may call ['code'], which no route serves; fix: use the aliases"),
    ("alias routed twice", {"routes": [
        {"model": "chat", "backends": [{"model": DEEPSEEK}]},
        {"model": "chat", "backends": [{"model": LLAMA}]}]},
     "routes.1.model", "merge the two routes' backends"),
    ("zero weights", {"routes": [{"model": "chat", "backends": [
        {"model": DEEPSEEK, "weight": 0}, {"model": LLAMA, "weight": 0}]}]},
     "routes.0", "give one a weight > 0"),
    ("sticky without weights", {"routes": [{"model": "chat", "sticky": True,
                                            "backends": [{"model": DEEPSEEK}]}]},
     "routes.0", "set weights or remove sticky"),
    ("duplicate backend", {"routes": [{"model": "chat", "backends": [
        {"model": DEEPSEEK}, {"model": DEEPSEEK}]}]},
     "routes.0", "list each model config once"),
    ("no backends", {"routes": [{"model": "chat", "backends": []}]},
     "routes.0.backends", "correct the value"),
    ("attempts", {"routes": [{"model": "chat", "max_attempts": 9,
                              "backends": [{"model": DEEPSEEK}]}]},
     "routes.0.max_attempts", "correct the value"),
    ("weight", {"routes": [{"model": "chat", "backends": [{"model": DEEPSEEK, "weight": 5000}]}]},
     "routes.0.backends.0.weight", "correct the value"),
    ("fallback", {"fallback": {"cooldown_failures": 0}}, "fallback.cooldown_failures",
     "correct the value"),
    ("old api quota", {"api": {"throttle_rate_limit": 3}}, "api",
     "set rate_limit, burst_limit and requests_per_day under tiers.<name>"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "field", "fix"), [pytest.param(d, f, x, id=i) for i, d, f, x in BAD]
)
def test_invalid_config_names_file_field_and_fix(
    tmp_path: Path, data: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, data)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'gateway.yaml'}: invalid gateway config")
    assert f"\n  {field}: " in message, message
    assert fix in message, message


# --- Checks against the model configs (stacks.build) --------------------------------------


def test_unknown_route_backend_fails_the_build(tmp_path: Path) -> None:
    directory = _config_dir(
        tmp_path, {"routes": [{"model": "chat", "backends": [{"model": "deepseek-r2"}]}]}
    )
    with pytest.raises(ConfigError) as raised:
        build_default(config_dir=directory)
    assert str(raised.value) == (
        f"{directory / 'gateway.yaml'}: routes.0.backends.0.model: 'deepseek-r2' is not a model "
        f"config; fix: use the name of one of ['{DEEPSEEK}', '{LLAMA}']"
    )


def test_consumer_route_must_be_a_model_when_routes_are_omitted(tmp_path: Path) -> None:
    directory = _config_dir(
        tmp_path, {"consumers": [{"name": "a", "tier": "standard", "routes": ["llama-3"]}]}
    )
    with pytest.raises(ConfigError) as raised:
        build_default(config_dir=directory)
    message = str(raised.value)
    assert message.startswith(f"{directory / 'gateway.yaml'}: consumers.0.routes: ")
    assert "may call ['llama-3'], which no route serves" in message
    assert (
        "fix: use model config names (each model is routed under its name): "
        f"['{DEEPSEEK}', '{LLAMA}']"
    ) in message


def _routes_env(template: Template) -> RouteTable:
    (function,) = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "run.sh"}}
    ).values()
    return RouteTable.model_validate_json(
        function["Properties"]["Environment"]["Variables"]["LLM_GATEWAY_ROUTES"]
    )


CANARY_GATEWAY: dict[str, Any] = {
    "tiers": TIERS,
    "consumers": [
        {"name": "team-a", "tier": "gold"},
        {"name": "intern", "tier": "free", "routes": ["deepseek-r1"]},
    ],
    "routes": [
        {
            "model": "deepseek-r1",
            "backends": [{"model": DEEPSEEK, "weight": 95}, {"model": CANARY, "weight": 5}],
            "first_byte_timeout_s": 45,
            "max_attempts": 2,
            "sticky": True,
        },
        {"model": "llama", "backends": [{"model": LLAMA}, {"model": DEEPSEEK}], "max_attempts": 1},
    ],
    "fallback": {"cooldown_failures": 2, "cooldown_s": 10},
}


def test_canary_and_fallback_routes_from_yaml(tmp_path: Path) -> None:
    _, built = build_default(config_dir=_config_dir(tmp_path, CANARY_GATEWAY, canary=True))
    template = Template.from_stack(built.gateway)
    table = _routes_env(template)
    assert (table.cooldown_failures, table.cooldown_s) == (2, 10.0)
    canary = table.get("deepseek-r1")
    assert canary is not None
    assert [(b.name, b.weight) for b in canary.backends] == [(DEEPSEEK, 95), (CANARY, 5)]
    assert [b.endpoint_name for b in canary.backends] == [
        built.models[DEEPSEEK].endpoint.endpoint_name,
        built.models[CANARY].endpoint.endpoint_name,
    ]
    assert (canary.first_byte_timeout_s, canary.max_attempts, canary.sticky) == (45.0, 2, True)
    llama = table.get("llama")
    assert llama is not None
    assert [(b.name, b.weight) for b in llama.backends] == [(LLAMA, None), (DEEPSEEK, None)]
    assert llama.max_attempts == 1
    assert table.get(DEEPSEEK) is None, "explicit routes replace the per-model ones"
    outputs = template.find_outputs("*")
    assert {"ApiKeyIdTeamA", "ApiKeyIdIntern", "QuotaTableName"} <= set(outputs)
    # Every endpoint of every route is invokable, each once.
    policies = json.dumps(template.find_resources("AWS::IAM::Policy"))
    for name in (DEEPSEEK, CANARY, LLAMA):
        assert policies.count(built.models[name].endpoint.endpoint_name.lower()) == 1
