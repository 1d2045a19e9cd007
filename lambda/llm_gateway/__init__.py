"""OpenAI-compatible streaming gateway for SageMaker endpoints (the Lambda's runtime code).

Imports no CDK: it runs in Lambda under the Web Adapter (``run.sh`` → uvicorn → ``main:app``)
and locally against the SageMaker-runtime emulator in ``local/``.
"""
