"""DynamoDB on loopback for tests and ``make local``: moto's server app, single-threaded.

moto's stock server answers requests on threads and its conditional updates are then not
atomic (measured: concurrent conditional ADDs over-admitted a limit). Served single-threaded,
each request is atomic, as a DynamoDB item write is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: tests and local runs make thousands of calls."""


@contextmanager
def dynamodb_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run moto's DynamoDB until the block exits; yields its URL."""
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=False, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-dynamodb", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        # Bounded: a single-threaded server busy on a client's open keep-alive connection
        # would make shutdown() wait for that client; the serving thread is a daemon anyway.
        stopper = threading.Thread(target=server.shutdown, name="moto-shutdown", daemon=True)
        stopper.start()
        stopper.join(timeout=5)
        thread.join(timeout=5)


def create_quota_table(client: Any, name: str) -> None:
    """Create the quota table as the CDK construct does: ``pk`` (S) partition key only,
    on-demand, TTL on ``expires_at`` (see ``lambda/llm_gateway/quota.py``)."""
    from llm_gateway.contract import QUOTA_PARTITION_KEY as PARTITION_KEY
    from llm_gateway.contract import QUOTA_TTL_ATTRIBUTE as TTL_ATTRIBUTE

    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )


def create_cache_table(client: Any, name: str) -> None:
    """Create the response cache's table: the quota table's layout (``pk`` (S), TTL on
    ``expires_at``; see ``lambda/llm_gateway/response_cache.py``)."""
    create_quota_table(client, name)
