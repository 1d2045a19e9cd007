#!/bin/sh
# Lambda handler under the Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): start the ASGI
# app on the port the adapter forwards to. Shipped inside the llm_gateway package (package
# data); the bundler puts a copy at the asset root, beside the package. Also usable locally,
# from the source tree or an installed package: PORT=8080 ./lambda/llm_gateway/run.sh
here=$(dirname "$0")
# Run from the directory that holds the llm_gateway package: the asset root in Lambda, the
# package's parent directory otherwise.
if [ -d "$here/llm_gateway" ]; then cd "$here" || exit 1; else cd "$here/.." || exit 1; fi
exec python3 -m uvicorn llm_gateway.main:app --loop asyncio --http httptools \
  --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
  --no-access-log --no-server-header --log-level warning --timeout-graceful-shutdown 1
