"""uvicorn entry point (``run.sh``): settings from the environment, clients at the edge."""

from __future__ import annotations

import logging
import os

from llm_gateway.app import create_app
from llm_gateway.quota import QuotaStore
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s %(message)s"
)
logging.getLogger("botocore").setLevel(logging.WARNING)

settings = Settings.from_env(os.environ)
app = create_app(
    settings, SageMakerInvoker.from_settings(settings), quota=QuotaStore.from_env(os.environ)
)
