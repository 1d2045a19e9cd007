"""``llm_serving/config/images.json`` is complete and agrees with CDK's region facts.

Its agreement with the SageMaker SDK is checked by ``maintainer/test_image_catalog_sdk.py``,
which ``make catalog`` runs (the SDK is a maintainer tool: nothing else installs it).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_cdk.region_info import Fact, FactName

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


def _entry(family: str, version: str) -> dict[str, Any]:
    entry: dict[str, Any] = CATALOG["families"][family]["versions"][version]
    return entry


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
