"""The gateway process in isolation: time it adds to the first chunk at 1, 20 and 100 concurrent
streams, relay throughput, CPU per streamed request, and its memory.

Three kinds of process share the machine: the upstream (``bench.stub``, cheap, timestamping its
side of every stream), one gateway process started through ``run.sh`` as the Lambda Web
Adapter starts it, and the load client (``bench.load``: this process, plus a second one at 100
streams). Streams are paced like a model's (``--tokens`` tokens ``--delay-ms`` apart, the first
after the same delay), so concurrent streams overlap as real ones do instead of queueing back
to back.

* **added to the first chunk**: per stream, the client's time to the first token minus the
  stub's own time for it (``bench.load``), through the gateway, minus the median of the same
  figure for streams sent straight to the stub at the same concurrency (loopback and client
  parsing, which the gateway path also has once).
* **CPU per streamed request**: the gateway's CPU time (``/proc/<pid>/stat``, user + system,
  threads included) over ``--sequential`` short streams (8 tokens, no delay) one after another.
* **relay**: one stream of ``--relay-tokens`` tokens with no delay; events per second at the
  client, and the gateway's CPU time per event.
* **RSS**: after start-up and one request (idle), and the peak (``VmHWM``) after all the load.

    .venv/bin/python -m bench.gateway [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import load
from bench.harness import CREDENTIALS, ROOT
from bench.stub import wait_port
from local.run import gateway_run_sh, wait_ready
from local.serving import free_port

PACED = "paced"
SHORT = "short"
RELAY = "relay"
LEVELS = (1, 20, 100)
# lambda/llm_gateway/run.sh's, for the floor app.
UVICORN_OPTIONS = ("--loop", "asyncio", "--http", "httptools", "--host", "127.0.0.1",
                   "--no-access-log", "--no-server-header", "--log-level", "warning")  # fmt: skip
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Servers:
    stub_url: str
    gateway_url: str
    gateway_pid: int
    endpoints: dict[str, str]


def _routes(endpoints: dict[str, str]) -> dict[str, Any]:
    return {"routes": [
        {"model": model, "backends": [{"name": model, "endpoint_name": endpoint,
                                        "format": "openai", "max_tokens_default": 64}]}
        for model, endpoint in endpoints.items()
    ]}  # fmt: skip


@contextmanager
def servers(
    *, tokens: int, delay_ms: float, relay_tokens: int, app: str = "gateway"
) -> Iterator[Servers]:
    """The stub and one gateway process (through ``run.sh``), until the block exits.

    ``app="floor"`` serves ``bench.floor_app`` instead, with run.sh's uvicorn options: the
    upstream client and uvicorn alone, to see what the gateway's own layers add.
    """
    endpoints = {
        PACED: f"stub-{tokens}-{delay_ms:g}",
        SHORT: "stub-8-0",
        RELAY: f"stub-{relay_tokens}-0",
    }
    stub_port, gateway_port = free_port(), free_port()
    stub_url = f"http://127.0.0.1:{stub_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    env = {
        **os.environ,
        **CREDENTIALS,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": stub_url,
        "LLM_GATEWAY_ROUTES": json.dumps(_routes(endpoints)),
        "LOG_LEVEL": "WARNING",
        "PORT": str(gateway_port),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("AWS_LWA_PORT", None)
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    stub = subprocess.Popen([sys.executable, "-m", "bench.stub", "--port", str(stub_port)],
                            cwd=ROOT, env=env, **quiet)  # fmt: skip
    if app == "floor":
        command = [sys.executable, "-m", "uvicorn", "bench.floor_app:app", *UVICORN_OPTIONS,
                   "--port", str(gateway_port)]  # fmt: skip
    else:
        command = ["sh", str(gateway_run_sh())]
    gateway = subprocess.Popen(command, cwd=ROOT, env=env, **quiet)
    try:
        wait_ready(f"{gateway_url}/healthz", gateway)
        wait_port(stub_url, stub)
        yield Servers(stub_url, gateway_url, gateway.pid, endpoints)
    finally:
        for process in (gateway, stub):
            process.terminate()
        for process in (gateway, stub):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``, its threads (living and ended) included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_ticks() -> dict[str, int]:
    """This machine's CPU time so far, in clock ticks, by state (``/proc/stat``): ``steal``
    is time the hypervisor gave to others, a sign that figures taken meanwhile are noisy."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(names, map(int, fields), strict=True))


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid``, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0]) * 1024
    return values


def _level(s: Servers, streams: int, rounds: int, direct_rounds: int) -> dict[str, Any]:
    processes = 2 if streams >= 50 else 1
    stub = load.Target.stub(s.stub_url, s.endpoints[PACED])
    direct = load.run(stub, streams=streams, rounds=direct_rounds, processes=processes)
    baseline = statistics.median(direct.overhead_ns)
    before = cpu_seconds(s.gateway_pid)
    via = load.run(load.Target.gateway(s.gateway_url, PACED), streams=streams, rounds=rounds,
                   processes=processes)  # fmt: skip
    cpu = cpu_seconds(s.gateway_pid) - before
    return {
        "streams": streams,
        "samples": len(via.overhead_ns),
        "errors": via.errors + direct.errors,
        "added_ms": load.percentiles(via.overhead_ns, baseline),
        "gateway_path_ms": load.percentiles(via.overhead_ns),
        "direct_path_ms": load.percentiles(direct.overhead_ns),
        "ttfb_ms": load.percentiles(via.ttfb_ns),
        "gateway_cpu_share": cpu / via.wall_s,
        "streams_per_s": len(via.overhead_ns) / via.wall_s,
    }


def run(
    *,
    quick: bool = False,
    tokens: int = 32,
    delay_ms: float = 10,
    relay_tokens: int = 20_000,
    sequential: int = 2_000,
    levels: tuple[int, ...] = LEVELS,
    app: str = "gateway",
) -> dict[str, Any]:
    rounds = {1: 200, 20: 50, 100: 20}
    direct_rounds = {1: 100, 20: 20, 100: 10}
    if quick:
        rounds = {n: max(2, r // 10) for n, r in rounds.items()}
        direct_rounds = {n: max(2, r // 10) for n, r in direct_rounds.items()}
        sequential, relay_tokens = sequential // 10, relay_tokens // 10
    results: dict[str, Any] = {"app": app, "tokens": tokens, "delay_ms": delay_ms}
    ticks = machine_ticks()
    with servers(tokens=tokens, delay_ms=delay_ms, relay_tokens=relay_tokens, app=app) as s:
        short = load.Target.gateway(s.gateway_url, SHORT)
        load.sequential(short, 20)  # warm connections and code paths
        results["rss_idle_bytes"] = memory(s.gateway_pid)["VmRSS"]
        before = cpu_seconds(s.gateway_pid)
        start = time.perf_counter()
        errors = load.sequential(short, sequential)
        wall = time.perf_counter() - start
        results["cpu_per_request_ms"] = (cpu_seconds(s.gateway_pid) - before) / sequential * 1e3
        results["sequential"] = {"requests": sequential, "errors": errors,
                                 "ms_per_request": wall / sequential * 1e3}  # fmt: skip
        results["levels"] = [
            _level(s, n, rounds.get(n, 20), direct_rounds.get(n, 10)) for n in levels
        ]
        direct = load.Target.stub(s.stub_url, s.endpoints[RELAY])
        via = load.Target.gateway(s.gateway_url, RELAY)
        load.relay(direct), load.relay(via)  # warm up
        parts, direct_s = load.relay(direct)
        before = cpu_seconds(s.gateway_pid)
        events, gateway_s = load.relay(via)
        relay_cpu = cpu_seconds(s.gateway_pid) - before
        results["relay"] = {
            "tokens": relay_tokens,
            "direct_parts_per_s": parts / direct_s,
            "gateway_chunks_per_s": events / gateway_s,
            "gateway_cpu_us_per_chunk": relay_cpu / events * 1e6,
        }
        results["rss_peak_bytes"] = memory(s.gateway_pid)["VmHWM"]
    after = machine_ticks()
    spent = {name: after[name] - ticks[name] for name in ticks}
    results["steal_share"] = spent["steal"] / max(1, sum(spent.values()))
    return results


def print_table(r: dict[str, Any]) -> None:
    what = (
        "the floor app (uvicorn + upstream client)"
        if r.get("app") == "floor"
        else "one gateway process"
    )
    print(f"\nAdded to the first chunk by {what} (ms), streams of {r['tokens']} "
          f"tokens {r['delay_ms']:g} ms apart")  # fmt: skip
    print(f"{'streams':>8} {'samples':>8} {'median':>8} {'p90':>8} {'p99':>8} "
          f"{'direct med':>11} {'gw CPU':>7} {'errors':>7}")  # fmt: skip
    for level in r["levels"]:
        a = level["added_ms"]
        print(f"{level['streams']:>8} {level['samples']:>8} {a['median']:8.2f} {a['p90']:8.2f} "
              f"{a['p99']:8.2f} {level['direct_path_ms']['median']:11.2f} "
              f"{level['gateway_cpu_share']:7.0%} {level['errors']:>7}")  # fmt: skip
    relay = r["relay"]
    print(f"\nRelay, one stream of {relay['tokens']} chunks")
    print(f"{'stub alone (client reading)':36} {relay['direct_parts_per_s']:>12,.0f} parts/s")
    print(f"{'through the gateway':36} {relay['gateway_chunks_per_s']:>12,.0f} chunks/s")
    print(f"{'gateway CPU per chunk':36} {relay['gateway_cpu_us_per_chunk']:>12.1f} µs")
    print(f"\n{'CPU per streamed request (8 tokens)':36} {r['cpu_per_request_ms']:>12.3f} ms")
    print(f"{'RSS idle / peak':36} {r['rss_idle_bytes'] / 2**20:>8.1f} / "
          f"{r['rss_peak_bytes'] / 2**20:.1f} MiB")  # fmt: skip
    print(f"{'CPU stolen by the hypervisor meanwhile':36} {r.get('steal_share', 0):>12.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke run)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument(
        "--app",
        choices=["gateway", "floor"],
        default="gateway",
        help="floor: uvicorn and the upstream client only (bench.floor_app)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    levels = tuple(int(n) for n in args.levels.split(","))
    results = run(quick=args.quick, levels=levels, app=args.app)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
