"""Export the configuration's JSON Schemas, and a reference generated from them, from the
pydantic models in ``llm_serving/config/``.

Usage::

    python scripts/export_schema.py           # write docs/schema/*.json, docs/configuration.md
    python scripts/export_schema.py --check   # exit 1 if any of them is stale

The schemas are what the pydantic models accept (``model_json_schema()`` in validation mode),
with defaults from default factories filled in, no per-field titles, and maps with constrained
keys closed (``additionalProperties: false``, as pydantic rejects other keys). Editors that
understand JSON Schema (the YAML language server: ``# yaml-language-server: $schema=…``)
complete and check the YAML files with them. Checks that need more than one field or a
catalog stay in the models and are listed in the reference.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

# Importing llm_serving starts jsii, which prints a large banner on Node 20 otherwise.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from llm_serving.config import GatewayConfig, ModelConfig

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SCHEMA_DIR: Final = REPO_ROOT / "docs" / "schema"
REFERENCE_PATH: Final = REPO_ROOT / "docs" / "configuration.md"
GENERATED_BY: Final = "scripts/export_schema.py"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class ConfigFile:
    """One kind of configuration file and the model that validates it."""

    key: str
    model: type[BaseModel]
    title: str
    location: str
    description: str

    @property
    def schema_path(self) -> Path:
        return SCHEMA_DIR / f"{self.key}.schema.json"


CONFIG_FILES: Final = (
    ConfigFile(
        key="model-config",
        model=ModelConfig,
        title="Model config",
        location="model_configs/<name>.yaml",
        description=(
            "One model deployment: its weights, serving container, instance, autoscaling, "
            "deployment policy and how the gateway talks to it. One file per model; the file "
            "name must equal `name`."
        ),
    ),
    ConfigFile(
        key="gateway",
        model=GatewayConfig,
        title="Gateway config",
        location="model_configs/gateway.yaml",
        description=(
            "The streaming gateway: its function, tiers and consumers (API keys, request and "
            "token quotas), routes (model aliases with fallback and canary backends) and "
            "observability. Optional, and so is every key: without the file every section "
            "takes its defaults, and each model config is routed under its own name."
        ),
    ),
)

# What the schemas cannot say (cross-field rules, catalogs): checked when the configs load.
BEYOND_THE_SCHEMA: Final = (
    "a model config's file name equals its `name`",
    "`container.image_version` is in the pinned image catalog (`llm_serving/config/images.json`) "
    "for the container's family",
    "the model fits the instance's GPUs (weights and KV cache at `max_model_len`), and "
    "`tensor_parallel_degree` divides among them",
    "`container.max_input_length` is below `container.max_model_len` (TGI)",
    "`scaling.max_instances` ≥ `scaling.min_instances`, and `instance.initial_count` lies "
    "between them",
    "`gateway.stream_format` is one the container family produces; `gateway.prompt_template` "
    "is set exactly for the `lmi` and `tgi` formats; `gateway.max_tokens_default` is below "
    "`container.max_model_len`",
    "a tier has at most one request quota, and its `default_reservation` fits its token quotas",
    "consumers name existing tiers, have distinct names, and call only routed aliases; route "
    "aliases are unique, list each backend once, and backends name model configs",
    "`sticky` needs weighted backends, and weights must not all be 0",
    "`web_adapter.layer_arn` is in the stack's region; China regions need `x86_64`",
)


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with default factories' values shown and closed maps."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "Max Model Len" adds nothing to the field's name and description

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return cast(Any, factory)()
        return super().get_default_value(schema)

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema:
            json_schema.setdefault("additionalProperties", False)
        return json_schema


_REST_ROLE = re.compile(r":(?:class|meth|func|attr|mod):`~?([^`]+)`")
_DOUBLE_BACKTICKS = re.compile(r"``([^`]+)``")


def _plain(text: str) -> str:
    """A docstring's reST markup as Markdown-ish text: ``x`` → `x`, :class:`X` → `X`."""
    return _DOUBLE_BACKTICKS.sub(r"`\1`", _REST_ROLE.sub(r"`\1`", text))


def _clean_descriptions(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = _plain(value)
            else:
                _clean_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            _clean_descriptions(item)


def _tags_required(node: Any) -> None:
    """A tag (``family: vllm``) defaults to its only value in Python, so constructing
    ``VllmContainer(...)`` needs no ``family=``; a file must still say it (the union is
    discriminated by it), so the schema keeps it required and shows no default."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name, field in properties.items():
                if (
                    isinstance(field, dict)
                    and "const" in field
                    and field.get("default") == field["const"]
                ):
                    del field["default"]
                    required = node.setdefault("required", [])
                    if name not in required:
                        required.append(name)
        for value in node.values():
            _tags_required(value)
    elif isinstance(node, list):
        for item in node:
            _tags_required(item)


def json_schema(config: ConfigFile, mode: JsonSchemaMode = "validation") -> dict[str, Any]:
    """The JSON Schema of ``config``'s file."""
    generated = config.model.model_json_schema(schema_generator=_Generator, mode=mode)
    _tags_required(generated)
    _clean_descriptions(generated)
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"llm-serving-cdk {config.title.lower()} ({config.location})",
        "description": f"{config.description} Generated by {GENERATED_BY}.",
        **generated,
    }


def render_json(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


# --- The Markdown reference ------------------------------------------------------------------


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _anchor(config: ConfigFile, definition: str) -> str:
    return f"{config.key}-{definition.lower()}"


def _cell(text: str) -> str:
    """Table-safe: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _scalar(value: Any) -> str:
    """A value as it is written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if value == "" or ":" in value else value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class _Reference:
    """Renders one configuration file's schema as Markdown: a table for the top level, then one
    section per object schema, each followed by the sections it leads to."""

    def __init__(self, config: ConfigFile, schema: Mapping[str, Any]) -> None:
        self.config = config
        self.schema = schema
        self.defs: Mapping[str, Any] = schema.get("$defs", {})
        self.rendered: set[str] = set()
        self.long_defaults: list[tuple[str, Any]] = []

    def link(self, definition: str) -> str:
        return f"[{definition}](#{_anchor(self.config, definition)})"

    def type_of(self, node: Mapping[str, Any]) -> str:
        if "$ref" in node:
            return self.link(_ref_name(node["$ref"]))
        if "const" in node and node.get("type") != "boolean":
            return f"`{_scalar(node['const'])}`"
        if "enum" in node and "anyOf" not in node:
            return "one of " + ", ".join(f"`{_scalar(v)}`" for v in node["enum"])
        variants = node.get("oneOf") or node.get("anyOf")
        if variants:
            return " or ".join(self.type_of(v) for v in variants)
        kind = node.get("type")
        if kind == "array":
            return f"list of {self.type_of(node.get('items', {}))}"
        if kind == "object":
            values = list(node.get("patternProperties", {}).values())
            if values:
                return f"map of names → {self.type_of(values[0])}"
            return "object"
        return str(kind) if kind else "any"

    def constraints(self, node: Mapping[str, Any]) -> list[str]:
        found: list[str] = []
        bounds = (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        found += [f"{symbol} {_scalar(node[key])}" for key, symbol in bounds if key in node]
        if "minLength" in node:
            found.append(f"length ≥ {node['minLength']}")
        if "maxLength" in node:
            found.append(f"length ≤ {node['maxLength']}")
        if "pattern" in node:
            found.append(f"pattern `{node['pattern']}`")
        if "minItems" in node:
            found.append(f"at least {_count(node['minItems'], 'item')}")
        if "minProperties" in node:
            found.append(f"at least {_count(node['minProperties'], 'entry')}".replace("ys", "ies"))
        found += [f"names match `{pattern}`" for pattern in node.get("patternProperties", {})]
        names = node.get("propertyNames", {})
        if "maxLength" in names:
            found.append(f"names ≤ {names['maxLength']} characters")
        if node.get("type") == "boolean" and "const" in node:
            found.append(f"must be `{_scalar(node['const'])}`")
        if "enum" in node and "anyOf" in node:
            found.append("one of " + ", ".join(_scalar(v) for v in node["enum"]))
        for variant in node.get("anyOf", []):
            if variant.get("type") != "null" and "$ref" not in variant:
                found += self.constraints(variant)
        items = node.get("items", {}) if node.get("type") == "array" else {}
        if items and "$ref" not in items:
            found += [f"each {c}" for c in self.constraints(items)]
        return found

    @staticmethod
    def _refs(node: Mapping[str, Any]) -> list[str]:
        variants = node.get("oneOf") or node.get("anyOf") or [node]
        return [_ref_name(v["$ref"]) for v in variants if "$ref" in v]

    def _own_defaults(self, definition: str) -> dict[str, Any] | None:
        """What an object of ``definition`` holds when nothing is set (None if it needs
        something)."""
        values: dict[str, Any] = {}
        for name, prop in self.defs[definition].get("properties", {}).items():
            if "default" in prop:
                values[name] = prop["default"]
            elif "const" in prop:
                values[name] = prop["const"]
            else:
                return None
        return values

    def default_of(self, path: str, node: Mapping[str, Any], required: bool) -> str:
        if required:
            return "**required**"
        if "default" not in node:
            return "—"
        default = node["default"]
        refs = self._refs(node)
        for ref in refs if isinstance(default, dict) else []:
            if self._own_defaults(ref) == default:
                return "its fields' defaults" + (f" ({self.link(ref)})" if len(refs) > 1 else "")
        text = _scalar(default)
        if isinstance(default, dict | list) and len(text) > 40:
            self.long_defaults.append((path, default))
            return f"[below](#{self.config.key}-default-{path.replace('.', '-')})"
        return f"`{text}`"

    def description_of(self, node: Mapping[str, Any]) -> str:
        description = node.get("description")
        refs = self._refs(node)
        if not description and len(refs) == 1:  # pydantic leaves out a repeated docstring
            description = self.defs[refs[0]].get("description", "")
        return _plain(description or "").split("\n\n")[0] or "—"

    def children(self, node: Mapping[str, Any], path: str) -> Iterator[tuple[str, str, str]]:
        """``(definition, heading, path)`` for every object schema ``node`` leads to."""
        refs = self._refs(node)
        for ref in refs:
            yield ref, self._tagged(ref, path) if len(refs) > 1 else f"`{path}`", path
        variants = node.get("oneOf") or node.get("anyOf") or []
        for variant in variants:
            if "$ref" not in variant:
                yield from self.children(variant, path)
        if node.get("type") == "array":
            yield from self.children(node.get("items", {}), f"{path}[]")
        for value in node.get("patternProperties", {}).values():
            yield from self.children(value, f"{path}.<name>")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "propertyNames" in node:  # keys from a fixed set
            yield from self.children(extra, f"{path}.<key>")

    def _tagged(self, definition: str, path: str) -> str:
        """``path`` and the variant's tag, e.g. `container` with `family: vllm`."""
        for name, prop in self.defs[definition].get("properties", {}).items():
            if "const" in prop and prop.get("type") == "string":
                return f"`{path}` with `{name}: {_scalar(prop['const'])}`"
        return f"`{path}`"

    def object_lines(self, node: Mapping[str, Any], prefix: str) -> list[str]:
        """``node``'s table, then the sections of the objects it leads to."""
        lines = [
            "| Field | Type | Default | Constraints | Description |",
            "|---|---|---|---|---|",
        ]
        required = set(node.get("required", []))
        nested: list[tuple[str, str, str]] = []
        for name, prop in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            cells = [
                f"`{name}`",
                self.type_of(prop),
                self.default_of(path, prop, name in required),
                "; ".join(self.constraints(prop)) or "—",
                self.description_of(prop),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            for child in self.children(prop, path):
                if child[0] not in self.rendered and child[0] not in (n[0] for n in nested):
                    nested.append(child)
        for definition, heading, path in nested:
            if definition not in self.rendered:
                lines += self.section_lines(definition, heading, path)
        return lines

    def section_lines(self, definition: str, heading: str, path: str) -> list[str]:
        self.rendered.add(definition)
        schema = self.defs[definition]
        lines = [
            "",
            f'<a id="{_anchor(self.config, definition)}"></a>',
            "",
            f"### {heading}: {definition}",
            "",
        ]
        if schema.get("description"):
            lines += [_paragraphs(schema["description"]), ""]
        return lines + self.object_lines(schema, path)

    def render(self) -> list[str]:
        config = self.config
        schema_file = f"schema/{config.schema_path.name}"
        lines = [
            f"## {config.title} (`{config.location}`)",
            "",
            config.description,
            "",
            f"JSON Schema: [`{schema_file}`]({schema_file}).",
            "",
            *self.object_lines(self.schema, ""),
        ]
        for path, default in self.long_defaults:
            lines += [
                "",
                f'<a id="{config.key}-default-{path.replace(".", "-")}"></a>',
                "",
                f"Default of `{path}`:",
                "",
                "```json",
                json.dumps(default, indent=2, ensure_ascii=False),
                "```",
            ]
        return lines


def _paragraphs(text: str) -> str:
    """A docstring's paragraphs, each on one line."""
    return "\n\n".join(" ".join(p.split()) for p in _plain(text).split("\n\n"))


def render_reference(schemas: Sequence[tuple[ConfigFile, Mapping[str, Any]]]) -> str:
    links = ", ".join(
        f"[`schema/{config.schema_path.name}`](schema/{config.schema_path.name})"
        for config, _ in schemas
    )
    lines = [
        f"<!-- Generated by {GENERATED_BY} from the pydantic models in llm_serving/config/; "
        "do not edit. Regenerate with `make schema`. -->",
        "",
        "# Configuration reference",
        "",
        "Every field of the two configuration files, with its type, default, constraints and "
        "meaning. Both are YAML; unknown keys are errors. The same rules as JSON Schemas: "
        f"{links}. "
        "Editors with the YAML language server check and complete a file that starts with "
        "a line such as `# yaml-language-server: $schema=../docs/schema/model-config.schema.json` "
        "(the shipped configs do).",
        "",
        "Checked when the configs load, beyond what a schema can say:",
        "",
        *(f"- {rule}" for rule in BEYOND_THE_SCHEMA),
        "",
        "`null` means the field is unset (the default applies where one is described).",
    ]
    for config, schema in schemas:
        lines += ["", *_Reference(config, schema).render()]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    schemas = [(config, json_schema(config)) for config in CONFIG_FILES]
    files = {config.schema_path: render_json(schema) for config, schema in schemas}
    files[REFERENCE_PATH] = render_reference(schemas)
    return files


def _display(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def check(files: Mapping[Path, str]) -> int:
    """Exit status for ``--check``: 0 if every file on disk holds exactly what it would get."""
    stale = 0
    for path, expected in files.items():
        if not path.exists():
            print(f"{_display(path)} does not exist; run {GENERATED_BY}", file=sys.stderr)
            stale += 1
            continue
        on_disk = path.read_text(encoding="utf-8")
        if on_disk == expected:
            print(f"{_display(path)} is up to date")
            continue
        stale += 1
        diff = difflib.unified_diff(
            on_disk.splitlines(), expected.splitlines(), "on disk", "generated", lineterm="", n=1
        )
        shown = list(diff)
        print(
            f"{_display(path)} is stale; run {GENERATED_BY} (make schema) and commit the result:",
            *shown[:40],
            *(["  …"] if len(shown) > 40 else []),
            sep="\n",
            file=sys.stderr,
        )
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if a generated file is stale"
    )
    args = parser.parse_args(argv)
    files = outputs()
    if args.check:
        return check(files)
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {_display(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
