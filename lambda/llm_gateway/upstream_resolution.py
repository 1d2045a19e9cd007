"""What botocore decides for ``InvokeEndpointWithResponseStream``, resolved once at start-up by
botocore itself (:func:`resolve`), and botocore's TLS context (:func:`ssl_context`): the
configuration :mod:`llm_gateway.upstream_async` then uses for every request.

What is resolved: the URL botocore would send the call to (its endpoint resolution:
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` / ``AWS_ENDPOINT_URL`` or the ``endpoint_url`` config
setting, else the service's endpoint rule set for the region, FIPS and dual-stack; see
botocore/configprovider.py, ``ConfiguredEndpointProvider``, and botocore/regions.py,
``EndpointRulesetResolver``), the signing name and region (``sagemaker``: the runtime's
``signingName`` in botocore/data/sagemaker-runtime/2017-05-13/service-2.json) and the
signature version.
"""

from __future__ import annotations

import concurrent.futures
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from botocore.httpsession import create_urllib3_context, get_cert_path

OPERATION = "InvokeEndpointWithResponseStream"
PLACEHOLDER = "llm-gateway-resolve"
"""The endpoint name of the resolving call (never sent)."""


@dataclass(frozen=True)
class Resolution:
    """What botocore would do for the operation, as captured from a stopped call."""

    base_url: str
    """Scheme, host, port and any base path; the operation's path follows it."""
    signing_name: str
    region: str
    signature_version: str
    user_agent: str


class _Resolved(Exception):  # noqa: N818  # not an error: how the dry run stops
    def __init__(self, resolution: Resolution) -> None:
        super().__init__("resolved")
        self.resolution = resolution


def resolve(client: Any) -> Resolution:
    """Run one ``invoke_endpoint_with_response_stream`` through ``client`` (a botocore
    ``sagemaker-runtime`` client) and stop it at ``before-sign``: nothing is signed or sent,
    and no credentials are needed. botocore has by then resolved the endpoint for the call
    (botocore/client.py, ``_resolve_endpoint_ruleset``) and chosen the signer
    (botocore/signers.py, ``RequestSigner.sign``: the signing context of an endpoint's auth
    scheme overrides the service's signing name and region, as here)."""

    def capture(request: Any, signing_name: str, region_name: str, signature_version: str,
                **_: Any) -> None:  # fmt: skip
        signing = request.context.get("signing") or {}
        url = str(request.url)
        raise _Resolved(
            Resolution(
                base_url=url[: url.index(f"/endpoints/{PLACEHOLDER}/")],
                signing_name=str(signing.get("signing_name") or signing_name),
                region=str(signing.get("region") or region_name),
                signature_version=str(signature_version),
                user_agent=str(request.headers.get("User-Agent", "")),
            )
        )

    event = f"before-sign.{client.meta.service_model.service_id.hyphenize()}.{OPERATION}"
    client.meta.events.register_first(event, capture, unique_id="llm-gateway-resolve")
    try:
        client.invoke_endpoint_with_response_stream(
            EndpointName=PLACEHOLDER, Body=b"{}", ContentType="application/json"
        )
    except _Resolved as resolved:
        return resolved.resolution
    finally:
        client.meta.events.unregister(event, unique_id="llm-gateway-resolve")
    raise RuntimeError("botocore sent the resolving call instead of signing it")


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """botocore's TLS context (botocore/httpsession.py: ``create_urllib3_context``, the CA
    bundle of ``get_cert_path``: ``AWS_CA_BUNDLE``/``ca_bundle``, else certifi's or botocore's
    own), with the host name checked by the ssl module (urllib3 checks it itself)."""
    context: ssl.SSLContext = create_urllib3_context()
    context.load_verify_locations(cafile=get_cert_path(verify))
    context.check_hostname = True
    return context


def ssl_context_soon(verify: bool | str) -> concurrent.futures.Future[ssl.SSLContext]:
    """:func:`ssl_context`, built on a thread of its own: loading the CA bundle takes
    30-45 ms, during which OpenSSL releases the GIL, so the rest of start-up goes on meanwhile
    (boto3 loads it at the first HTTPS connection instead, i.e. in the first request)."""
    future: concurrent.futures.Future[ssl.SSLContext] = concurrent.futures.Future()

    def build() -> None:
        try:
            future.set_result(ssl_context(verify))
        except BaseException as exc:  # surfaces at the first connection, as a TLS failure
            future.set_exception(exc)

    threading.Thread(target=build, name="tls-context", daemon=True).start()
    return future
