"""SigV4 for the gateway's own SageMaker runtime requests: botocore's signer, without botocore's
request objects.

The signature is botocore's ``SigV4Auth`` (botocore/auth.py): canonical request, string to
sign, scope and the ``Authorization`` header are its code. Three things differ, all for cost
(signing a request went from ≈ 64 to ≈ 27 µs; tests/gateway/test_upstream_async.py checks
the header against the stock signer and against what a botocore client sends):

* the request is a plain object with the attributes ``SigV4Auth`` reads and writes on an
  ``AWSRequest`` (``method``, ``url``, ``headers``, ``body``, ``context``, ``params``), its
  headers a plain ``dict`` (each name set once, in one spelling), not botocore's
  ``email.message``-based ``HTTPHeaders``;
* ``headers_to_sign`` builds the same lower-cased map as botocore's, as a ``dict`` of lists
  with the ``get_all`` that ``canonical_headers`` calls, rather than another ``HTTPHeaders``;
* the signing key (four HMACs over secret, date, region and service, as
  ``SigV4Auth.signature`` derives it) is kept for the last secret and date.
"""

from __future__ import annotations

import hmac
from hashlib import sha256
from typing import Any

from botocore.auth import SIGNED_HEADERS_BLACKLIST, SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

_NOT_SIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)


def host_header(url: str) -> str:
    """The ``Host`` value botocore signs for ``url`` (lower-case, default port left out)."""
    return str(_host_from_url(url))


class SigningRequest:
    """What ``SigV4Auth.add_auth`` uses of botocore's ``AWSRequest``."""

    __slots__ = ("body", "context", "headers", "method", "params", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.context: dict[str, Any] = {}
        self.params: dict[str, str] = {}


class _HeadersToSign(dict[str, list[str]]):
    def get_all(self, name: str) -> list[str]:
        return self[name]


class RuntimeSigV4Auth(SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """botocore's SigV4 signer over a :class:`SigningRequest` (see the module docstring)."""

    _signing_key: tuple[tuple[str, str, str, str], bytes] | None = None

    def headers_to_sign(self, request: SigningRequest) -> _HeadersToSign:
        header_map = _HeadersToSign()
        for name, value in request.headers.items():
            lname = name.lower()
            if lname not in _NOT_SIGNED:
                header_map.setdefault(lname, []).append(value)
        if "host" not in header_map:
            header_map["host"] = [host_header(request.url)]
        return header_map

    def signature(self, string_to_sign: str, request: SigningRequest) -> str:
        scope = (
            self.credentials.secret_key,
            request.context["timestamp"][0:8],
            self._region_name,
            self._service_name,
        )
        cached = RuntimeSigV4Auth._signing_key
        if cached is not None and cached[0] == scope:
            key = cached[1]
        else:
            secret, date, region, service = scope
            k_date = self._sign(f"AWS4{secret}".encode(), date)
            k_region = self._sign(k_date, region)
            k_service = self._sign(k_region, service)
            key = self._sign(k_service, "aws4_request")
            RuntimeSigV4Auth._signing_key = (scope, key)
        return hmac.new(key, string_to_sign.encode("utf-8"), sha256).hexdigest()


def sign(
    credentials: ReadOnlyCredentials,
    *,
    service: str,
    region: str,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
) -> dict[str, str]:
    """``headers`` with ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token) and
    ``Authorization`` added, as botocore adds them (``headers`` is changed in place)."""
    request = SigningRequest(method, url, headers, body)
    RuntimeSigV4Auth(credentials, service, region).add_auth(request)
    return request.headers


def agrees_with_botocore(service: str, region: str, url: str) -> bool:
    """Whether :func:`sign` and botocore's own ``SigV4Auth`` give the same ``Authorization`` for
    one made-up request (both at the same instant, to the second): a start-up check that this
    botocore (the Lambda runtime's, not necessarily the tested one) still works the way the
    overrides above assume. Sub-millisecond."""
    credentials = ReadOnlyCredentials("AKIDSELFCHECK", "self/check+secret", "token")
    headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Accept": "*/*"}
    body = b'{"self": "check"}'
    for _ in range(3):  # a second boundary between the two signatures: try again
        stock = AWSRequest("POST", url, data=body, headers=dict(headers))
        SigV4Auth(credentials, service, region).add_auth(stock)
        ours = sign(credentials, service=service, region=region, method="POST", url=url,
                    headers=dict(headers), body=body)  # fmt: skip
        if ours["X-Amz-Date"] == stock.headers["X-Amz-Date"]:
            return bool(ours["Authorization"] == stock.headers["Authorization"])
    return False
