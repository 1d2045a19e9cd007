"""``make bench``: the gateway process in isolation (time added to the first chunk at 1, 20
and 100 concurrent streams, relay throughput, CPU per streamed request, RSS: ``bench.gateway``),
cold start (import time, bundle size), synth and test time.

Prints a table and writes the figures as JSON (``--json``, default ``bench-results.json``).

    .venv/bin/python -m bench [--quick] [--skip-tests] [--skip-synth] [--json PATH]
"""

from __future__ import annotations

import os

# Before jsii starts (the cold-start benchmark imports the construct library's bundler).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import coldstart, gateway
from bench.harness import ROOT


def _timed(command: list[str]) -> float:
    path = os.pathsep.join([str(Path(sys.executable).parent), str(ROOT / "node_modules" / ".bin")])
    env = {**os.environ, "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stdout[-3000:]}")
    return time.perf_counter() - start


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "system": platform.platform()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke run)")
    parser.add_argument("--skip-tests", action="store_true", help="do not time the test suite")
    parser.add_argument("--skip-synth", action="store_true", help="do not time cdk synth")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"machine": _machine()}
    results["gateway"] = gateway.run(quick=args.quick)
    results["cold_start"] = coldstart.run()
    if not args.skip_synth:
        cdk = str(ROOT / "node_modules" / ".bin" / "cdk")
        results["synth_s"] = _timed([cdk, "synth", "--quiet", "-o", "cdk.out.bench"])
    if not args.skip_tests:
        results["tests_s"] = _timed(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        )
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    _print(results)
    return 0


def _print(r: dict[str, Any]) -> None:
    gateway.print_table(r["gateway"])
    cs = r["cold_start"]
    print("\nCold start and build")
    print(f"{'import llm_gateway.main':36} {cs['import_ms']:>12.0f} ms")
    print(f"{'bundle (arm64) unzipped / zipped':36} {cs['unzipped_bytes'] / 2**20:>8.1f} / "
          f"{cs['zipped_bytes'] / 2**20:.1f} MiB")  # fmt: skip
    if "synth_s" in r:
        print(f"{'cdk synth (whole app)':36} {r['synth_s']:>12.1f} s")
    if "tests_s" in r:
        print(f"{'test suite (pytest)':36} {r['tests_s']:>12.1f} s")


if __name__ == "__main__":
    sys.exit(main())
