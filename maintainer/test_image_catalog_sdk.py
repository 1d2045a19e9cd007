"""``llm_serving/config/images.json`` agrees with the SageMaker SDK it was generated from.

Run by ``make catalog`` after regenerating the catalog (``pytest maintainer``): the SDK
(``sagemaker-core``, from requirements-maintainer.txt) is imported normally, so a missing SDK is
a failure, not a skip. Tests are parametrized per family/version and loop over regions inside,
reporting every mismatch in one assertion message.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from sagemaker.core import image_uris

from tests.test_image_catalog import (
    CATALOG,
    FAMILY_VERSIONS,
    REPO_ROOT,
    SCRIPT_PATH,
    _entry,
    script,
)


@pytest.fixture(scope="module", autouse=True)
def _reuse_endpoint_resolver() -> Iterator[None]:
    """Same speed-up as the script: botocore's static endpoint data is parsed once, not per call."""
    with script.reuse_endpoint_resolver():
        yield


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


def test_catalog_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT_PATH), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
