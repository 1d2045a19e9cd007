"""botocore clients from one session per process: the standard configuration chain (region,
credentials, ``AWS_ENDPOINT_URL_<SERVICE>``), resolved once and shared by every client.

botocore rather than boto3: ``boto3.client`` creates the same botocore client (boto3/session.py,
``Session.client`` calls ``botocore.session.Session.create_client``), but importing boto3 also
imports s3transfer and multiprocessing, 15–35 ms of the function's start-up for nothing the
gateway uses (``python -X importtime``, those modules' own time).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import botocore.session

if TYPE_CHECKING:
    from botocore.config import Config
    from botocore.session import Session


@cache
def session() -> Session:
    """The process's botocore session (thread-safe to create clients from once built)."""
    return botocore.session.get_session()


def client(service: str, config: Config) -> Any:
    """A new client for ``service`` (``dynamodb``, ``bedrock-runtime``…) from :func:`session`."""
    return session().create_client(service, config=config)
