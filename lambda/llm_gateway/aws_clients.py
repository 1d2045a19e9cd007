"""botocore clients for the gateway's AWS calls: the standard configuration chain (region,
credentials, ``AWS_ENDPOINT_URL_<SERVICE>``). ``main.py`` creates one session and passes it to
every client it builds: a session loads botocore's endpoint and service data once, so a second
client in it takes ≈ 13 ms to create, one in a session of its own ≈ 67 ms.

botocore rather than boto3: ``boto3.client`` creates the same botocore client (boto3/session.py,
``Session.client`` calls ``botocore.session.Session.create_client``), but importing boto3 also
imports s3transfer and multiprocessing, 15–35 ms of the function's start-up for nothing the
gateway uses (``python -X importtime``, those modules' own time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import botocore.session

if TYPE_CHECKING:
    from botocore.config import Config
    from botocore.session import Session


def client(service: str, config: Config, session: Session | None = None) -> Any:
    """A new client for ``service`` (``dynamodb``, ``bedrock-runtime``…) from ``session``
    (default: a new one)."""
    return (session or botocore.session.get_session()).create_client(service, config=config)
