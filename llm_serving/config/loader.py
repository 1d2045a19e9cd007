"""Load ``model_configs/*.yaml`` into :class:`ModelConfig` objects, once, with errors that
name the file, the field and the fix."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from llm_serving.config.deploy_rules import DeployRuleError, plan_deployment
from llm_serving.config.schema import ModelConfig
from llm_serving.config.shared_endpoints import (
    SharedEndpointError,
    SharedEndpointPlan,
    plan_shared_endpoints,
)

NON_MODEL_FILES = frozenset({"gateway.yaml"})


class ConfigError(ValueError):
    """Invalid configuration; the message names file, field and fix."""


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(parts) or "(top level)"


def _fix(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        return "add this field"
    if kind == "extra_forbidden":
        return "remove it or fix its spelling (unknown fields are rejected)"
    if kind == "literal_error":
        return f"use one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"set the discriminator to one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"add the discriminator field {ctx.get('discriminator')}"
    if kind == "string_pattern_mismatch":
        return f"match the pattern {ctx.get('pattern')}"
    return "correct the value"


def _format_errors(path: Path, exc: ValidationError, *, kind: str = "model config") -> str:
    lines = [f"{path}: invalid {kind} ({exc.error_count()} error(s))"]
    for error in exc.errors(include_url=False):
        field = _field(error["loc"])
        if error["type"] == "value_error":  # our validators already say how to fix it
            lines.append(f"  {field}: {error['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {field}: {error['msg']} — fix: {_fix(error)}")
    return "\n".join(lines)


def _check_semantics(path: Path, config: ModelConfig) -> None:
    """Checks that need catalogs and AWS's rules (``deploy_rules.py``)."""
    try:
        plan_deployment(config)
    except DeployRuleError as exc:
        raise ConfigError(exc.located(str(path))) from None


def parse_model_config(data: Any, path: Path) -> ModelConfig:
    """Validate already-loaded YAML data; ``path`` is only used in messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    _check_semantics(path, config)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so a repeated section would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice; fix: keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text("utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_model_config(path: Path) -> ModelConfig:
    """Read and validate one YAML file."""
    config = parse_model_config(_read_yaml(path), path)
    if config.name != path.stem:
        raise ConfigError(
            f"{path}: name: {config.name!r} differs from the file name; "
            f"fix: rename the file to {config.name}.yaml or set name: {path.stem}"
        )
    return config


def shared_endpoint_plans(
    hosted: Iterable[tuple[Path, ModelConfig]],
) -> dict[str, SharedEndpointPlan]:
    """The shared endpoints of ``hosted`` (file, config), checked across the files."""
    try:
        return plan_shared_endpoints([(str(path), config) for path, config in hosted])
    except SharedEndpointError as exc:
        raise ConfigError(str(exc)) from None


def model_config_paths(directory: Path) -> list[Path]:
    """The model configs in ``directory``: every ``*.yaml`` but ``gateway.yaml``. A ``*.yml``
    file is an error, not silently skipped."""
    misnamed = sorted(directory.glob("*.yml"))
    if misnamed:
        names = ", ".join(str(p) for p in misnamed)
        raise ConfigError(
            f"{names}: only *.yaml files are read as configs; fix: rename to "
            f"{', '.join(p.with_suffix('.yaml').name for p in misnamed)}"
        )
    return sorted(p for p in directory.glob("*.yaml") if p.name not in NON_MODEL_FILES)


def load_model_configs(directory: Path, only: Iterable[str] | None = None) -> list[ModelConfig]:
    """Load every model config in ``directory`` (``gateway.yaml`` excluded)."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: config directory not found; fix: pass -c config_dir=<dir>")
    paths = model_config_paths(directory)
    configs = [load_model_config(p) for p in paths]
    if not configs:
        raise ConfigError(f"{directory}: no model configs (*.yaml); fix: add at least one")
    shared_endpoint_plans(zip(paths, configs, strict=True))
    if only is not None:
        wanted = set(only)
        unknown = wanted - {c.name for c in configs}
        if unknown:
            raise ConfigError(
                f"{directory}: models {sorted(unknown)} not found; "
                f"fix: use names from {[c.name for c in configs]}"
            )
        configs = [c for c in configs if c.name in wanted]
    return configs
