#!/bin/sh
# Lambda handler under the Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): start the ASGI
# app on the port the adapter forwards to. Also usable locally: PORT=8080 ./lambda/run.sh
cd "$(dirname "$0")" || exit 1
exec python3 -m uvicorn llm_gateway.main:app \
  --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
  --no-access-log --no-server-header --log-level warning --timeout-graceful-shutdown 1
