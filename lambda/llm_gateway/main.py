"""uvicorn entry point (``run.sh``): settings from the environment, clients at the edge."""

from __future__ import annotations

import logging
import os

import botocore.session
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from llm_gateway import telemetry
from llm_gateway.app import create_app
from llm_gateway.policies import Policies
from llm_gateway.quota import QuotaStore
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker

# Every log line as JSON (Powertools' formatter), like the per-request line in telemetry.py.
_handler = logging.StreamHandler()
_handler.setFormatter(LambdaPowertoolsFormatter())
logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), handlers=[_handler])
# The per-request line has its own handler (Powertools'), which keeps it off the root handlers
# that exist when its Logger is created (aws_lambda_powertools/logging/logger.py,
# Logger._init_logger: SuppressFilter); the one above comes later, so stop it propagating.
logging.getLogger(telemetry.logger.name).propagate = False
logging.getLogger("botocore").setLevel(logging.WARNING)

settings = Settings.from_env(os.environ)
# One botocore session for every client: it loads botocore's endpoint and service data once
# (llm_gateway/aws_clients.py).
session = botocore.session.get_session()
app = create_app(
    settings,
    SageMakerInvoker.from_settings(settings, session=session),
    quota=QuotaStore.from_env(os.environ, session=session),
    policies=Policies.from_env(settings, os.environ, session=session),
)
