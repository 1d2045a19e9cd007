"""The authorizer function itself: which key a request carries, and the answer API Gateway
needs (principalId, an Allow for the stage's methods, usageIdentifierKey)."""

from __future__ import annotations

import pytest

from llm_gateway.authorizer import handler, key_from_headers

METHOD_ARN = "arn:aws:execute-api:eu-west-1:111122223333:abc123/api/POST/v1/chat/completions"


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": "Bearer sk-123"}, "sk-123"),
        ({"authorization": "bearer  sk-123 "}, "sk-123"),
        ({"x-api-key": "k-1"}, "k-1"),
        ({"X-Api-Key": "k-1"}, "k-1"),
        ({"Authorization": "Bearer sk-1", "x-api-key": "k-2"}, "sk-1"),
        ({"Authorization": "Basic dXNlcjpwdw==", "x-api-key": "k-2"}, "k-2"),
        ({"Authorization": "Bearer ", "x-api-key": ""}, None),
        ({"Authorization": "Basic dXNlcjpwdw=="}, None),
        ({}, None),
        (None, None),
    ],
)
def test_key_from_headers(headers: dict[str, str] | None, key: str | None) -> None:
    assert key_from_headers(headers) == key


def test_the_answer_hands_the_key_to_usage_plans() -> None:
    answer = handler({"methodArn": METHOD_ARN, "headers": {"Authorization": "Bearer sk-9"}}, None)
    assert answer["usageIdentifierKey"] == "sk-9"
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        # Both methods of the stage: a cached answer serves GET /v1/models too.
        "Resource": "arn:aws:execute-api:eu-west-1:111122223333:abc123/api/*/*",
    }
    assert answer["principalId"]


def test_no_key_is_api_gateways_unauthorized() -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        handler({"methodArn": METHOD_ARN, "headers": {"accept": "*/*"}}, None)
