"""The exported JSON Schemas and the generated reference: current, usable, and as strict as the
models for what a schema can say."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from llm_serving.config import GatewayConfig, ModelConfig
from tests.conftest import CONFIG_DIR, ROOT, load_yaml, variant

SCRIPT = ROOT / "scripts" / "export_schema.py"
SCHEMA_DIR = ROOT / "docs" / "schema"
MODEL_SCHEMA = SCHEMA_DIR / "model-config.schema.json"
GATEWAY_SCHEMA = SCHEMA_DIR / "gateway.schema.json"
REFERENCE = ROOT / "docs" / "configuration.md"
MODEL_FILES = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "gateway.yaml")


def _validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(path: Path, data: Any) -> list[str]:
    return [error.message for error in _validator(path).iter_errors(data)]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_schema", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    """`make schema` after changing a config model, and commit the result."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("is up to date") == 3


def test_check_fails_on_a_stale_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    stale = tmp_path / "stale.json"
    stale.write_text('{"old": true}\n')
    assert script.check({stale: '{"new": true}\n'}) == 1
    assert "is stale" in capsys.readouterr().err
    assert script.check({tmp_path / "missing.json": "{}\n"}) == 1
    assert script.check({stale: '{"old": true}\n'}) == 0


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_shipped_model_configs_validate_against_the_schema(path: Path) -> None:
    assert _errors(MODEL_SCHEMA, yaml.safe_load(path.read_text())) == []


def test_shipped_gateway_config_validates_against_the_schema() -> None:
    assert _errors(GATEWAY_SCHEMA, load_yaml("gateway.yaml")) == []


@pytest.mark.parametrize(
    ("path", "schema"),
    [*((p, MODEL_SCHEMA) for p in MODEL_FILES), (CONFIG_DIR / "gateway.yaml", GATEWAY_SCHEMA)],
    ids=lambda p: p.stem if isinstance(p, Path) else None,
)
def test_shipped_configs_name_their_schema_for_editors(path: Path, schema: Path) -> None:
    first_line = path.read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first_line.startswith(prefix)
    assert (path.parent / first_line.removeprefix(prefix)).resolve() == schema


def _gateway(**sections: Any) -> dict[str, Any]:
    return {**load_yaml("gateway.yaml"), **sections}


TIER = {"rate_limit": 1, "burst_limit": 1, "default_reservation": 1}

# Each is rejected by the model; the schema must say no too.
REJECTED: list[tuple[type[BaseModel], Path, dict[str, Any]]] = [
    (ModelConfig, MODEL_SCHEMA, variant("deepseek-r1-distill-qwen-7b", instnce={"type": "x"})),
    (ModelConfig, MODEL_SCHEMA, variant("deepseek-r1-distill-qwen-7b", name="Upper-Case")),
    (ModelConfig, MODEL_SCHEMA, variant("deepseek-r1-distill-qwen-7b", container__family="trt")),
    (ModelConfig, MODEL_SCHEMA, variant("deepseek-r1-distill-qwen-7b", container__tgi_only=1)),
    (
        ModelConfig,
        MODEL_SCHEMA,
        variant("deepseek-r1-distill-qwen-7b", container__engine_args={"Bad_Flag": True}),
    ),
    (ModelConfig, MODEL_SCHEMA, variant("llama-2-13b-chat", license__accept_eula=False)),
    (ModelConfig, MODEL_SCHEMA, variant("llama-2-13b-chat", scaling__min_instances=0)),
    (GatewayConfig, GATEWAY_SCHEMA, _gateway(tiers={"Team A": TIER})),
    (GatewayConfig, GATEWAY_SCHEMA, _gateway(tiers={})),
    (GatewayConfig, GATEWAY_SCHEMA, _gateway(function={"log_retention_days": 2})),
    (GatewayConfig, GATEWAY_SCHEMA, _gateway(web_adapter={"architecture": "riscv"})),
    (GatewayConfig, GATEWAY_SCHEMA, _gateway(routes=[{"model": "m", "backends": []}])),
]


@pytest.mark.parametrize(("model", "schema", "data"), REJECTED)
def test_schema_rejects_what_the_model_rejects(
    model: type[BaseModel], schema: Path, data: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)
    assert _errors(schema, data), "the schema accepted it"


@pytest.mark.parametrize(
    ("model", "schema"), [(GatewayConfig, GATEWAY_SCHEMA), (ModelConfig, MODEL_SCHEMA)]
)
def test_schema_defaults_are_the_models(model: type[BaseModel], schema: Path) -> None:
    """Defaults, from default factories too, as the model fills them in."""
    exported = json.loads(schema.read_text())
    if model is GatewayConfig:
        dumped = GatewayConfig().model_dump(mode="json")
    else:
        dumped = ModelConfig.model_validate(load_yaml(MODEL_FILES[0].name)).model_dump(mode="json")
    for name, prop in exported["properties"].items():
        if name in exported.get("required", []) or name == "description":
            continue
        if model is ModelConfig and name in load_yaml(MODEL_FILES[0].name):
            continue  # set in the file: not the default
        assert prop["default"] == dumped[name], name


def _properties(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    objects = {"(top level)": schema, **schema["$defs"]}
    return [
        (where, name, prop)
        for where, node in objects.items()
        for name, prop in node.get("properties", {}).items()
    ]


@pytest.mark.parametrize("path", [MODEL_SCHEMA, GATEWAY_SCHEMA], ids=lambda p: p.stem)
def test_every_field_is_described(path: Path) -> None:
    """Editors show these on hover; the reference prints them."""
    schema = json.loads(path.read_text())
    for where, name, prop in _properties(schema):
        ref = prop.get("$ref", "").rsplit("/", 1)[-1]
        described = prop.get("description") or schema["$defs"].get(ref, {}).get("description")
        assert described, f"{path.name}: {where}.{name} has no description"


def test_reference_documents_every_field() -> None:
    reference = REFERENCE.read_text()
    for path, key in ((MODEL_SCHEMA, "model-config"), (GATEWAY_SCHEMA, "gateway")):
        schema = json.loads(path.read_text())
        for definition in schema["$defs"]:
            assert f'<a id="{key}-{definition.lower()}"></a>' in reference, definition
        for where, name, _ in _properties(schema):
            assert f"| `{name}` |" in reference, f"{where}.{name}"
