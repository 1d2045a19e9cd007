"""CORS on the REST API: off by default; when origins are configured, API Gateway answers the
preflight and its own error responses may be read from a browser."""

from __future__ import annotations

import pytest

from tests.test_gateway import _config, _function_env, _gateway


def test_off_by_default() -> None:
    template, _ = _gateway()
    methods = template.find_resources("AWS::ApiGateway::Method")
    assert sorted(m["Properties"]["HttpMethod"] for m in methods.values()) == ["GET", "POST"]
    assert _function_env(template)["LLM_GATEWAY_CORS_ORIGINS"] == ""


def test_configured_origins_get_a_preflight_and_readable_errors() -> None:
    origins = ["https://chat.example.com", "http://localhost:3000"]
    template, _ = _gateway(config=_config(api={"cors_origins": origins}))
    options = [
        m["Properties"]
        for m in template.find_resources("AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "OPTIONS"
    ]
    assert options, "a preflight per resource"
    for method in options:
        assert method["Integration"]["Type"] == "MOCK"
        assert method.get("ApiKeyRequired") in (None, False)
    assert _function_env(template)["LLM_GATEWAY_CORS_ORIGINS"] == ",".join(origins)
    for response in template.find_resources("AWS::ApiGateway::GatewayResponse").values():
        headers = response["Properties"]["ResponseParameters"]
        assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"


@pytest.mark.parametrize("origin", ["chat.example.com", "https://x.example/path", "ftp://x"])
def test_origins_must_be_scheme_and_host(origin: str) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        _config(api={"cors_origins": [origin]})
