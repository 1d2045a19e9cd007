"""Regenerate ``llm_serving/config/images.json`` from the SageMaker SDK's image catalog.

Usage::

    python scripts/update_image_catalog.py           # rewrite images.json
    python scripts/update_image_catalog.py --check   # exit 1 if images.json is stale

Why the catalog is pinned and checked in instead of asking the SDK at synth time:

* The SageMaker SDK (``sagemaker-core``) is far too heavy to import during ``cdk synth``; the
  library reads only the small JSON file this script writes.
* Synth must be deterministic: the same commit always yields the same image URIs, so an SDK
  upgrade never silently changes a deployed container. Changing an image is a reviewed diff of
  ``PINNED_FAMILIES`` below plus the regenerated ``images.json``.
* Synth must work offline and without AWS credentials; nothing here or at synth calls AWS.

The file records, per family and version, one repository and one tag (identical in every
region, which this script enforces) plus the registry account of every region the SDK lists.
Only commercial (``amazonaws.com``) and China (``amazonaws.com.cn``) registries are recorded;
regions in other partitions (ISO, EUSC, ...) are skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Protocol, TypedDict, cast


@dataclass(frozen=True)
class FamilyPin:
    """The SDK framework behind a container family and the versions we pin."""

    sdk_framework: str
    versions: tuple[str, ...]


# Edit these pins, then rerun this script and review the diff of images.json.
PINNED_FAMILIES: Final[Mapping[str, FamilyPin]] = {
    "vllm": FamilyPin(sdk_framework="vllm", versions=("0.29.0", "0.30.0")),
    "lmi": FamilyPin(sdk_framework="djl-lmi", versions=("0.33.0", "0.35.0", "0.36.0")),
    "tgi": FamilyPin(sdk_framework="huggingface-llm", versions=("3.2.3", "3.3.6")),
}

# Arguments that make image_uris.retrieve() return the GPU inference image for every family.
INSTANCE_TYPE: Final = "ml.g5.2xlarge"
IMAGE_SCOPE: Final = "inference"

SDK_DISTRIBUTION: Final = "sagemaker-core"
SDK_IMAGE_URIS_MODULE: Final = "sagemaker.core.image_uris"
SDK_UTILS_MODULE: Final = "sagemaker.core.common_utils"
GENERATED_BY: Final = "scripts/update_image_catalog.py"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CATALOG_PATH: Final = REPO_ROOT / "llm_serving" / "config" / "images.json"

# The only registry host shapes recorded: commercial and China partitions.
_RECORDED_HOST: Final = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?"
)
_REPOSITORY_AND_TAG: Final = re.compile(r"(?P<repository>[a-z0-9][a-z0-9._/-]*):(?P<tag>[\w.-]+)")


class CatalogError(Exception):
    """The SDK data cannot be turned into a consistent catalog."""


class ImageUrisModule(Protocol):
    """The part of ``sagemaker.core.image_uris`` this script uses (the SDK ships no types)."""

    def retrieve(
        self, framework: str, region: str, *, version: str, instance_type: str, image_scope: str
    ) -> str: ...

    def config_for_framework(self, framework: str) -> dict[str, Any]: ...


class VersionEntry(TypedDict):
    repository: str
    tag: str
    registries: dict[str, str]


class FamilyEntry(TypedDict):
    sdk_framework: str
    versions: dict[str, VersionEntry]


class Catalog(TypedDict):
    generated_by: str
    source: str
    families: dict[str, FamilyEntry]


@dataclass(frozen=True)
class ImageRef:
    """An image URI split into the parts the catalog stores."""

    account: str
    repository: str
    tag: str


def load_sdk() -> ImageUrisModule:
    """Import the SDK's image URI module (slow: seconds, so only this script and tests do it)."""
    return cast(ImageUrisModule, importlib.import_module(SDK_IMAGE_URIS_MODULE))


@contextmanager
def reuse_endpoint_resolver() -> Iterator[None]:
    """Let the SDK build botocore's ECR endpoint resolver once instead of on every call.

    ``retrieve()`` calls the SDK's private ``common_utils._botocore_resolver()``, which re-reads
    and parses botocore's static ``endpoints.json`` each time (~40 ms; ~12 s for the catalog).
    Sharing one resolver changes no result. If the SDK drops that helper, this does nothing.
    """
    namespace = vars(importlib.import_module(SDK_UTILS_MODULE))
    original = namespace.get("_botocore_resolver")
    if not callable(original):
        yield
        return
    shared = original()
    namespace["_botocore_resolver"] = lambda: shared
    try:
        yield
    finally:
        namespace["_botocore_resolver"] = original


def sdk_source() -> str:
    """The ``source`` field: which SDK release the catalog was generated from."""
    return f"{SDK_DISTRIBUTION} {metadata.version(SDK_DISTRIBUTION)}"


def parse_image_uri(uri: str, region: str) -> ImageRef | None:
    """Split ``uri`` into account, repository and tag; ``None`` if its partition is skipped.

    This is the partition rule shared with the tests: only
    ``<account>.dkr.ecr.<region>.amazonaws.com`` and ``....amazonaws.com.cn`` hosts are recorded.
    Raises ``CatalogError`` for a recorded host that the catalog could not reproduce exactly.
    """
    host, _, path = uri.partition("/")
    match = _RECORDED_HOST.fullmatch(host)
    if match is None:
        return None
    if match["region"] != region:
        raise CatalogError(f"{uri}: registry host is for {match['region']}, expected {region}")
    if bool(match["cn"]) != region.startswith("cn-"):
        raise CatalogError(f"{uri}: '.cn' suffix must appear exactly for cn-* regions")
    image = _REPOSITORY_AND_TAG.fullmatch(path)
    if image is None:
        raise CatalogError(f"{uri}: expected '<repository>:<tag>' after the registry host")
    return ImageRef(account=match["account"], repository=image["repository"], tag=image["tag"])


def _scope_config(config: Mapping[str, Any], framework: str) -> Mapping[str, Any]:
    """The part of a framework's SDK config that holds ``versions`` for ``IMAGE_SCOPE``."""
    if "scope" in config:  # one config shared by the listed scopes (e.g. djl-lmi)
        scoped: Mapping[str, Any] = config
        scopes = config["scope"]
    else:  # one sub-config per scope (e.g. vllm, huggingface-llm)
        scoped = config.get(IMAGE_SCOPE, {})
        scopes = list(config)
    if IMAGE_SCOPE not in scopes:
        raise CatalogError(f"SDK framework {framework!r} has no {IMAGE_SCOPE!r} scope: {scopes}")
    return scoped


def sdk_regions(sdk: ImageUrisModule, framework: str, version: str) -> list[str]:
    """Every region the SDK lists a registry for, for this framework and (exact) version."""
    scoped = _scope_config(sdk.config_for_framework(framework), framework)
    versions: Mapping[str, Any] = scoped["versions"]
    if version not in versions:
        raise CatalogError(
            f"SDK framework {framework!r} has no version {version!r} "
            f"(pin an exact version, one of: {', '.join(versions)})"
        )
    registries = versions[version].get("registries")
    if not isinstance(registries, dict):
        raise CatalogError(f"SDK framework {framework!r} {version}: no per-region registries")
    return sorted(registries)


def sdk_image_uri(sdk: ImageUrisModule, framework: str, version: str, region: str) -> str:
    """The GPU inference image URI the SDK would use."""
    return sdk.retrieve(
        framework,
        region=region,
        version=version,
        instance_type=INSTANCE_TYPE,
        image_scope=IMAGE_SCOPE,
    )


def recorded_images(
    sdk: ImageUrisModule, framework: str, version: str
) -> tuple[dict[str, ImageRef], list[str]]:
    """Parsed images by region for the recorded partitions, plus the skipped regions."""
    images: dict[str, ImageRef] = {}
    skipped: list[str] = []
    for region in sdk_regions(sdk, framework, version):
        image = parse_image_uri(sdk_image_uri(sdk, framework, version, region), region)
        if image is None:
            skipped.append(region)
        else:
            images[region] = image
    return images, skipped


def version_entry(framework: str, version: str, images: Mapping[str, ImageRef]) -> VersionEntry:
    """Collapse per-region images into one entry; the repository and tag must not vary."""
    variants = {(image.repository, image.tag) for image in images.values()}
    if len(variants) != 1:
        by_region = "\n".join(
            f"  {region}: {ref.repository}:{ref.tag}" for region, ref in sorted(images.items())
        )
        raise CatalogError(
            f"{framework} {version}: expected one repository:tag in every region, "
            f"found {len(variants)}:\n{by_region}"
        )
    ((repository, tag),) = variants
    return VersionEntry(
        repository=repository,
        tag=tag,
        registries={region: image.account for region, image in sorted(images.items())},
    )


def family_entry(
    sdk: ImageUrisModule, family: str, pin: FamilyPin
) -> tuple[FamilyEntry, list[str]]:
    """One family's entry, plus a note for each version that skipped regions."""
    versions: dict[str, VersionEntry] = {}
    notes: list[str] = []
    for version in pin.versions:
        images, skipped = recorded_images(sdk, pin.sdk_framework, version)
        versions[version] = version_entry(pin.sdk_framework, version, images)
        if skipped:
            notes.append(f"{family} {version}: skipped other partitions: {', '.join(skipped)}")
    return FamilyEntry(sdk_framework=pin.sdk_framework, versions=versions), notes


def build_catalog(sdk: ImageUrisModule) -> tuple[Catalog, list[str]]:
    """The catalog for ``PINNED_FAMILIES``, plus notes on skipped regions."""
    families: dict[str, FamilyEntry] = {}
    notes: list[str] = []
    with reuse_endpoint_resolver():
        for family, pin in PINNED_FAMILIES.items():
            families[family], family_notes = family_entry(sdk, family, pin)
            notes += family_notes
    return Catalog(generated_by=GENERATED_BY, source=sdk_source(), families=families), notes


def render(catalog: Catalog) -> str:
    """The exact file content: sorted keys, two-space indent, trailing newline."""
    return json.dumps(catalog, indent=2, sort_keys=True) + "\n"


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, for a key-by-key comparison."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    flat: dict[str, object] = {}
    for key, child in value.items():
        flat.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def describe_differences(on_disk: str, expected: str) -> list[str]:
    """Readable lines saying how the file on disk differs from the generated one."""
    try:
        old = _flatten(json.loads(on_disk))
    except json.JSONDecodeError as error:
        return [f"the file on disk is not valid JSON: {error}"]
    new = _flatten(json.loads(expected))
    lines = [f"  - {key}: {old[key]!r}" for key in sorted(old.keys() - new.keys())]
    lines += [f"  + {key}: {new[key]!r}" for key in sorted(new.keys() - old.keys())]
    lines += [
        f"  ~ {key}: {old[key]!r} -> {new[key]!r}"
        for key in sorted(old.keys() & new.keys())
        if old[key] != new[key]
    ]
    return lines or ["  same content, different formatting"]


def _display(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def check(path: Path, expected: str) -> int:
    """Exit status for ``--check``: 0 if ``path`` holds exactly ``expected``."""
    if not path.exists():
        print(f"{_display(path)} does not exist; run {GENERATED_BY} to create it", file=sys.stderr)
        return 1
    on_disk = path.read_text(encoding="utf-8")
    if on_disk == expected:
        print(f"{_display(path)} is up to date")
        return 0
    print(
        f"{_display(path)} is stale (- on disk, + generated); "
        f"run {GENERATED_BY} and commit the result:",
        file=sys.stderr,
    )
    print("\n".join(describe_differences(on_disk, expected)), file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file on disk is stale"
    )
    args = parser.parse_args(argv)
    try:
        catalog, notes = build_catalog(load_sdk())
    except CatalogError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        return check(CATALOG_PATH, render(catalog))
    CATALOG_PATH.write_text(render(catalog), encoding="utf-8")
    print("\n".join([*notes, f"wrote {_display(CATALOG_PATH)} ({catalog['source']})"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
