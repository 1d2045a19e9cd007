"""API Gateway REQUEST authorizer: the client's API key, from ``Authorization: Bearer <key>``
(what OpenAI SDKs and chat UIs send) or ``x-api-key``, handed to API Gateway as
``usageIdentifierKey``.

With the REST API's API key source ``AUTHORIZER``, API Gateway matches that value against the
usage plans exactly as it matches an ``x-api-key`` header with source ``HEADER``: unknown keys
get 403, usage plans throttle and count as before, and ``$context.identity.apiKeyId`` names the
key (API Gateway developer guide, "Choose an API key source"; ../shared/reference/aws-facts.md).
This function does not judge the key; it only finds it. No key → ``Unauthorized`` (API
Gateway's 401). It never logs, so no key value reaches CloudWatch.

Standard library only: deployed as a single file (``index.py``) and imported by the gateway's
local identity check (``identity.py``), so both read keys the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BEARER = "bearer "
KEY_HEADER = "x-api-key"


def key_from_headers(headers: Mapping[str, str] | None) -> str | None:
    """The API key a request carries: a bearer token first, else ``x-api-key``. Header names
    are case-insensitive (HTTP); an empty value is no key."""
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    authorization = lowered.get("authorization", "")
    if authorization[: len(BEARER)].lower() == BEARER and authorization[len(BEARER) :].strip():
        return authorization[len(BEARER) :].strip()
    key = lowered.get(KEY_HEADER, "").strip()
    return key or None


def _api_arn(method_arn: str) -> str:
    """``arn:…:<api id>/<stage>/<method>/<path>`` → every method of that stage, so a cached
    result serves both of the API's methods."""
    api, stage = method_arn.split("/", 2)[:2]
    return f"{api}/{stage}/*/*"


def handler(event: Mapping[str, Any], _context: object) -> dict[str, Any]:
    """The REQUEST authorizer's answer (API Gateway developer guide, "Output from an API
    Gateway Lambda authorizer": ``principalId``, ``policyDocument``, ``usageIdentifierKey``)."""
    key = key_from_headers(event.get("headers"))
    if key is None:
        # The exact message API Gateway maps to a 401 UNAUTHORIZED response.
        raise Exception("Unauthorized")
    return {
        "principalId": "api-key",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": _api_arn(str(event["methodArn"])),
                }
            ],
        },
        "usageIdentifierKey": key,
    }
