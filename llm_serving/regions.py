"""Region names known offline: CDK's region facts plus every region the pinned image catalog
lists (the SageMaker SDK's registry table can be newer than CDK's)."""

from __future__ import annotations

import difflib
from functools import cache

from aws_cdk.region_info import RegionInfo

from llm_serving.config.images import catalog_regions


class UnknownRegionError(ValueError):
    """Not the name of an AWS region."""


@cache
def known_regions() -> frozenset[str]:
    return frozenset(r.name for r in RegionInfo.regions) | catalog_regions()


def check_region(region: str, *, source: str = "-c region") -> str:
    """``region`` if it names an AWS region, else :class:`UnknownRegionError` with the
    closest names (a typo such as ``us-est-1`` would otherwise synthesize and fail only at
    deploy, or silently pick another registry)."""
    known = known_regions()
    if region in known:
        return region
    close = difflib.get_close_matches(region, sorted(known), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UnknownRegionError(
        f"{source}: unknown region {region!r}; {hint}fix: use one of {', '.join(sorted(known))}"
    )
