"""``make local``: the gateway and a SageMaker-runtime emulator on loopback, no AWS account.

The routing and consumer tables are built by the function synth uses for the deployed
environment (``llm_serving.gateway_tables``), from the same configs, so local requests take the
same routes and quotas as deployed ones (endpoints are named after their model configs). What
differs: boto3 reaches the emulator and a local DynamoDB (moto, single-threaded) through
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` / ``AWS_ENDPOINT_URL_DYNAMODB``; and with no API Gateway
in front, every request acts as one configured consumer (``--consumer``). The gateway runs
through the runtime package's ``run.sh`` (``lambda/llm_gateway/run.sh``), as the Lambda Web
Adapter starts it.

Content safety and the response cache (off unless asked for or configured):
``--guardrail-block-words a,b`` gives every route a guardrail, answered by a local
ApplyGuardrail stand-in (``local.guardrail_emulator``, through
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``) that blocks those words in prompts and answers; routes
configured with a guardrail get the same stand-in. ``--cache`` gives every route the default
response cache (``LLM_GATEWAY_CACHE_TABLE``, a table in the local DynamoDB); configured caches
get the table too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from local.dynamodb import create_cache_table, create_quota_table, dynamodb_server

ROOT = Path(__file__).resolve().parent.parent
QUOTA_TABLE = "llm-gateway-quota"
CACHE_TABLE = "llm-gateway-cache"
LOCAL_GUARDRAIL = {"guardrail_id": "local", "guardrail_version": "DRAFT"}
REASONING = "The user greets me. A short, friendly answer is best; no need for a long explanation."
CONTENT = "Hello! I am a local emulator standing in for the model. How can I help? 🙂"


def gateway_run_sh() -> Path:
    """``run.sh`` of the ``llm_gateway`` package Python imports (the one the bundler ships)."""
    spec = importlib.util.find_spec("llm_gateway")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the llm_gateway package is not importable; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "run.sh"


def config_tables(config_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``LLM_GATEWAY_ROUTES`` and ``LLM_GATEWAY_CONSUMERS`` values, built from the configs
    by the same pure function the construct uses (``llm_serving.gateway_tables``), with each
    endpoint named after its model config and the consumers keyed by name.

    Built in a child process: importing ``llm_serving`` loads jsii's node runtime, which must
    not live in this long-running process (Ctrl-C reaches node too, and jsii's exit handler
    then hangs).
    """
    code = (
        "import json, sys; from pathlib import Path; from local.run import _tables; "
        "print(json.dumps(_tables(Path(sys.argv[1]))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config_dir)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"error: could not build the gateway's tables:\n{result.stderr[-2000:]}")
    tables = json.loads(result.stdout.strip().splitlines()[-1])
    return tables["routes"], tables["consumers"]


def _tables(config_dir: Path) -> dict[str, Any]:
    """In a child process (see :func:`config_tables`)."""
    from llm_serving.config import load_gateway_config, load_model_configs
    from llm_serving.gateway_tables import tables_from_configs

    routes, consumers = tables_from_configs(
        load_model_configs(config_dir), load_gateway_config(config_dir)
    )
    return {
        "routes": routes.model_dump(mode="json"),
        "consumers": consumers.model_dump(mode="json"),
    }


def scenarios(routes: dict[str, Any], config_dir: Path, delay_ms: float) -> dict[str, Any]:
    """One scripted answer per backend, in that backend's format (reasoning where it has some)."""
    from llm_serving.config.loader import load_model_configs
    from llm_serving.config.schema import VllmContainer

    reasoners = {
        c.name
        for c in load_model_configs(config_dir, only=None)
        if isinstance(c.container, VllmContainer) and c.container.reasoning_parser
    }
    result: dict[str, Any] = {}
    for route in routes["routes"]:
        for backend in route["backends"]:
            # The emulator answers a component by its name (local.emulator, COMPONENT_HEADER).
            key = backend.get("inference_component_name") or backend["endpoint_name"]
            result[key] = {
                "format": backend["format"],
                "reasoning": REASONING if backend["name"] in reasoners else "",
                "reasoning_field": "reasoning",  # what current vLLM sends
                "content": CONTENT,
                "token_delay_ms": delay_ms,
                "use_tools": backend["format"] == "openai",
            }
    return result


def with_policies(routes: dict[str, Any], *, guardrail: bool, cache: bool) -> dict[str, Any]:
    """``routes`` with the local guardrail and the default cache on every route that has
    none (as asked); configured ones are kept."""
    result = {**routes, "routes": [dict(route) for route in routes["routes"]]}
    for route in result["routes"]:
        if guardrail and route.get("guardrail") is None:
            route["guardrail"] = dict(LOCAL_GUARDRAIL)
        if cache and route.get("cache") is None:
            route["cache"] = {}
    return result


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"error: {url} not ready after {timeout_s} s")


@dataclass(frozen=True)
class LocalServers:
    emulator: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    emulator_url: str
    gateway_url: str
    guardrail: subprocess.Popen[bytes] | None = None
    guardrail_url: str | None = None

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.gateway, self.emulator, self.guardrail) if p is not None]


@contextmanager
def local_servers(
    *,
    scenarios: Mapping[str, Any],
    env: Mapping[str, str],
    emulator_port: int,
    gateway_port: int,
    quiet: bool = False,
    guardrail_port: int | None = None,
    block_words: Sequence[str] = (),
    guardrail_latency_ms: float = 0,
) -> Iterator[LocalServers]:
    """The emulator (answering ``scenarios``) and the gateway (through ``run.sh``), each its own
    process on loopback, ready when the block starts and stopped when it exits; with
    ``guardrail_port``, the ApplyGuardrail stand-in too (blocking ``block_words``).

    ``env`` adds the gateway's settings (routes, consumers, …) and credentials to this process's
    environment; the emulators' URLs, the port and this interpreter on ``PATH`` are filled in.
    """
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    guardrail_url = f"http://127.0.0.1:{guardrail_port}" if guardrail_port else None
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # run.sh starts `python3`: make it this interpreter (the project's venv).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
        **({"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": guardrail_url} if guardrail_url else {}),
        "PORT": str(gateway_port),
        **env,
    }
    full_env.pop("AWS_LWA_PORT", None)
    output: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with tempfile.TemporaryDirectory() as tmp:
        scenario_file = Path(tmp) / "scenarios.json"
        scenario_file.write_text(json.dumps(scenarios))
        emulator = subprocess.Popen(
            [sys.executable, "-m", "local.emulator", "--port", str(emulator_port),
             "--scenarios", str(scenario_file)],
            cwd=ROOT, env=full_env, **(output if quiet else {}),
        )  # fmt: skip
        guardrail = None
        if guardrail_url is not None:
            guardrail = subprocess.Popen(
                [sys.executable, "-m", "local.guardrail_emulator", "--port", str(guardrail_port),
                 "--block-words", ",".join(block_words),
                 "--latency-ms", str(guardrail_latency_ms)],
                cwd=ROOT, env=full_env, **(output if quiet else {}),
            )  # fmt: skip
        gateway = subprocess.Popen(
            ["sh", str(gateway_run_sh())], cwd=ROOT, env=full_env, **(output if quiet else {})
        )
        servers = LocalServers(emulator, gateway, emulator_url, gateway_url, guardrail,
                               guardrail_url)  # fmt: skip
        try:
            wait_ready(f"{emulator_url}/_emulator/requests", emulator)
            if guardrail is not None:
                wait_ready(f"{guardrail_url}/_guardrail/config", guardrail)
            wait_ready(f"{gateway_url}/healthz", gateway)
            yield servers
        finally:
            for process in servers.processes:
                process.terminate()
            for process in servers.processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    parser.add_argument("--emulator-port", type=int, default=8081)
    parser.add_argument("--config-dir", type=Path, default=ROOT / "model_configs")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--token-delay-ms", type=float, default=40, help="pause between tokens")
    parser.add_argument("--consumer", help="consumer every request acts as (default: the first)")
    parser.add_argument(
        "--guardrail-block-words",
        metavar="WORDS",
        help="give every route a guardrail (a local stand-in) blocking these comma-separated "
        "words in prompts and answers",
    )
    parser.add_argument("--guardrail-port", type=int, default=8082)
    parser.add_argument(
        "--cache", action="store_true", help="give every route the default response cache"
    )
    args = parser.parse_args(argv)
    # SIGINT stops everything even when this process was started with SIGINT ignored: a
    # non-interactive shell starts background jobs (`make local &`) that way, the disposition
    # is inherited, and Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    routes, consumers = config_tables(args.config_dir)
    words = [w.strip() for w in (args.guardrail_block_words or "").split(",") if w.strip()]
    routes = with_policies(routes, guardrail=args.guardrail_block_words is not None,
                           cache=args.cache)  # fmt: skip
    guarded = any(route.get("guardrail") is not None for route in routes["routes"])
    caching = any(route.get("cache") is not None for route in routes["routes"])
    consumer = args.consumer or next(iter(consumers["consumers"]))
    if consumer not in consumers["consumers"]:
        known = ", ".join(consumers["consumers"])
        raise SystemExit(f"error: --consumer {consumer}: not in gateway.yaml ({known})")
    with dynamodb_server() as dynamodb_url:
        create_quota_table(
            boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name=args.region,
                         aws_access_key_id="local", aws_secret_access_key="local"),
            QUOTA_TABLE,
        )  # fmt: skip
        if caching:
            create_cache_table(
                boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name=args.region,
                             aws_access_key_id="local", aws_secret_access_key="local"),
                CACHE_TABLE,
            )  # fmt: skip
        env = {
            # Any credentials sign the requests; the emulator does not check them.
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": args.region,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
            "LLM_GATEWAY_ROUTES": json.dumps(routes),
            "LLM_GATEWAY_CONSUMERS": json.dumps(consumers),
            "LLM_GATEWAY_QUOTA_TABLE": QUOTA_TABLE,
            "LLM_GATEWAY_LOCAL_CONSUMER": consumer,
            **({"LLM_GATEWAY_CACHE_TABLE": CACHE_TABLE} if caching else {}),
        }
        try:
            with local_servers(
                scenarios=scenarios(routes, args.config_dir, args.token_delay_ms),
                env=env,
                emulator_port=args.emulator_port,
                gateway_port=args.port,
                guardrail_port=args.guardrail_port if guarded else None,
                block_words=words,
            ) as servers:
                models = ", ".join(r["model"] for r in routes["routes"])
                print(
                    f"ready: gateway {servers.gateway_url}/v1 (models: {models}; acting as "
                    f"consumer {consumer}); emulator {servers.emulator_url}; DynamoDB "
                    f"{dynamodb_url}"
                    + (f"; guardrail stand-in {servers.guardrail_url}" if guarded else "")
                    + ("; response cache on" if caching else "")
                )
                print("stop with Ctrl-C", flush=True)
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                while all(process.poll() is None for process in servers.processes):
                    time.sleep(0.5)
                return 1
        except KeyboardInterrupt:
            print("stopped: gateway and emulator; stopping DynamoDB", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
