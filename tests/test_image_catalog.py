"""``llm_serving/config/images.json`` agrees with the SageMaker SDK and with CDK's region facts.

The SDK (``sagemaker-core``) is a dev dependency: it is imported normally, so a missing SDK is a
failure, not a skip. It is imported once per module; tests are parametrized per family/version
and loop over regions inside, reporting every mismatch in one assertion message.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_cdk.region_info import Fact, FactName
from sagemaker.core import image_uris

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT_PATH = REPO_ROOT / "scripts" / "update_image_catalog.py"
CATALOG_PATH = REPO_ROOT / "llm_serving" / "config" / "images.json"

# Accounts that have been stable for years; a change here means the SDK data (or our parsing) moved.
WELL_KNOWN_ACCOUNTS = {
    "af-south-1": "626614931356",
    "eu-south-1": "692866216735",
    "us-east-1": "763104351884",
}


def _load_script() -> ModuleType:
    """Import scripts/update_image_catalog.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("update_image_catalog", SCRIPT_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


script = _load_script()
CATALOG: dict[str, Any] = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
FAMILY_VERSIONS = [
    pytest.param(family, version, id=f"{family}-{version}")
    for family, entry in sorted(CATALOG["families"].items())
    for version in sorted(entry["versions"])
]


@pytest.fixture(scope="module", autouse=True)
def _reuse_endpoint_resolver() -> Iterator[None]:
    """Same speed-up as the script: botocore's static endpoint data is parsed once, not per call."""
    with script.reuse_endpoint_resolver():
        yield


def _entry(family: str, version: str) -> dict[str, Any]:
    entry: dict[str, Any] = CATALOG["families"][family]["versions"][version]
    return entry


def _framework(family: str) -> str:
    framework: str = CATALOG["families"][family]["sdk_framework"]
    return framework


@cache
def _sdk_uri(framework: str, version: str, region: str) -> str:
    uri: str = image_uris.retrieve(
        framework,
        region=region,
        version=version,
        instance_type=script.INSTANCE_TYPE,
        image_scope=script.IMAGE_SCOPE,
    )
    return uri


def _sdk_listed_regions(framework: str, version: str) -> set[str]:
    """Regions the SDK lists, read the way ``retrieve`` reads them (independently of the script)."""
    config = image_uris._config_for_framework_and_scope(framework, script.IMAGE_SCOPE)
    version_config = config["versions"][image_uris._version_for_config(version, config)]
    return set(version_config["registries"])


def _catalog_uri(entry: dict[str, Any], region: str) -> str:
    suffix = ".cn" if region.startswith("cn-") else ""
    account = entry["registries"][region]
    return f"{account}.dkr.ecr.{region}.amazonaws.com{suffix}/{entry['repository']}:{entry['tag']}"


def test_catalog_covers_exactly_the_pinned_families_and_versions() -> None:
    pinned = {
        family: (pin.sdk_framework, sorted(pin.versions))
        for family, pin in script.PINNED_FAMILIES.items()
    }
    in_catalog = {
        family: (entry["sdk_framework"], sorted(entry["versions"]))
        for family, entry in CATALOG["families"].items()
    }
    assert in_catalog == pinned


def _uri_mismatch(family: str, version: str, region: str) -> str | None:
    ours = _catalog_uri(_entry(family, version), region)
    try:
        sdk = _sdk_uri(_framework(family), version, region)
    except ValueError as error:  # the SDK rejects regions it has no image for
        return f"{region}: catalog {ours}, SDK has none ({str(error)[:80]}...)"
    return None if ours == sdk else f"{region}: catalog {ours} != SDK {sdk}"


@pytest.mark.parametrize(("family", "version"), FAMILY_VERSIONS)
def test_uris_match_sdk(family: str, version: str) -> None:
    mismatches = [
        mismatch
        for region in sorted(_entry(family, version)["registries"])
        if (mismatch := _uri_mismatch(family, version, region)) is not None
    ]
    assert not mismatches, f"{family} {version}:\n" + "\n".join(mismatches)


@pytest.mark.parametrize(("family", "version"), FAMILY_VERSIONS)
def test_regions_match_sdk(family: str, version: str) -> None:
    framework = _framework(family)
    expected = {
        region
        for region in _sdk_listed_regions(framework, version)
        if script.parse_image_uri(_sdk_uri(framework, version, region), region) is not None
    }
    actual = set(_entry(family, version)["registries"])
    assert actual == expected, (
        f"{family} {version}: missing from catalog {sorted(expected - actual)}, "
        f"not listed by SDK {sorted(actual - expected)}"
    )


@pytest.mark.parametrize(("family", "version"), FAMILY_VERSIONS)
def test_well_known_accounts(family: str, version: str) -> None:
    registries = _entry(family, version)["registries"]
    assert "us-east-1" in registries, f"{family} {version} is not published in us-east-1"
    wrong = {
        region: registries[region]
        for region, account in WELL_KNOWN_ACCOUNTS.items()
        if region in registries and registries[region] != account
    }
    assert not wrong, f"{family} {version}: unexpected accounts {wrong}"


@pytest.mark.parametrize(("family", "version"), FAMILY_VERSIONS)
def test_cdk_region_fact_agrees_where_it_has_a_value(family: str, version: str) -> None:
    registries = _entry(family, version)["registries"]
    disagreements = [
        f"{region}: CDK {cdk_account} != catalog {account}"
        for region, account in sorted(registries.items())
        if (cdk_account := Fact.find(region, FactName.DLC_REPOSITORY_ACCOUNT)) is not None
        and cdk_account != account
    ]
    assert not disagreements, f"{family} {version}:\n" + "\n".join(disagreements)


def test_catalog_not_cdk_is_the_source_of_truth_for_accounts() -> None:
    """The catalog carries registry accounts because CDK's region facts are incomplete.

    CDK's ``FactName.DLC_REPOSITORY_ACCOUNT`` has no value for af-south-1 and several newer
    regions (it returns ``None`` there), so an image URI built from CDK facts alone cannot be
    deployed in those regions. The SDK's catalog, pinned into images.json, does list them. If
    CDK ever fills the gap, its value must equal the catalog's; until then the catalog is the
    only source, and this test documents that.
    """
    cdk_account = Fact.find("af-south-1", FactName.DLC_REPOSITORY_ACCOUNT)
    catalog_accounts = {
        entry["registries"]["af-south-1"]
        for family in CATALOG["families"].values()
        for entry in family["versions"].values()
        if "af-south-1" in entry["registries"]
    }
    assert catalog_accounts == {WELL_KNOWN_ACCOUNTS["af-south-1"]}
    assert cdk_account is None or {cdk_account} == catalog_accounts


def test_catalog_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT_PATH), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
