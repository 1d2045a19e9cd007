"""Bundle the gateway's Lambda code without Docker and without the network.

The function's dependencies (``lambda/requirements.txt``, pinned by ``constraints.txt``) are
installed for the Lambda platform from a local wheelhouse that ``make setup`` fills, so
``cdk synth`` stays offline. boto3/botocore are not bundled: the Lambda runtime ships them.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Literal

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

PYTHON_VERSION = "3.13"
RUNTIME = lambda_.Runtime.PYTHON_3_13
ROOT = Path(__file__).resolve().parent.parent
LAMBDA_DIR = ROOT / "lambda"
CONSTRAINTS = ROOT / "constraints.txt"
WHEELHOUSE = ROOT / ".wheelhouse"

# Package files worth shipping (modules and PEP 561 markers); caches and notes stay behind.
PACKAGE_FILE_SUFFIXES = (".py", ".typed")
ASSET_EXCLUDE = [
    "**/__pycache__",
    "**/*.pyc",
    "**/.mypy_cache",
    "**/.pytest_cache",
    "**/.ruff_cache",
    "**/*.egg-info",
    "**/.DS_Store",
]

Architecture = Literal["arm64", "x86_64"]
_MACHINE: dict[str, str] = {"arm64": "aarch64", "x86_64": "x86_64"}
_DOCKER_PLATFORM: dict[str, str] = {"arm64": "linux/arm64", "x86_64": "linux/amd64"}


class BundlingError(RuntimeError):
    """The local bundle could not be built; the message says how to fix it."""


def pip_platform(architecture: Architecture) -> str:
    """pip's ``--platform`` tag for a Lambda architecture."""
    return f"manylinux2014_{_MACHINE[architecture]}"


def wheelhouse_dir(architecture: Architecture, wheelhouse: Path = WHEELHOUSE) -> Path:
    """Where ``make setup`` downloads the wheels for ``architecture``."""
    return wheelhouse / _MACHINE[architecture]


def _install_args(
    architecture: Architecture, target: str, requirements: str, constraints: str
) -> list[str]:
    return [
        "install",
        "--requirement",
        requirements,
        "--constraint",
        constraints,
        "--target",
        target,
        "--platform",
        pip_platform(architecture),
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-compile",
        "--quiet",
        "--disable-pip-version-check",
    ]


@jsii.implements(ILocalBundling)
class GatewayLocalBundler:
    """Builds the function's code directory on this machine, offline.

    Copies ``run.sh`` (executable) and the ``llm_gateway`` package (source files only) and
    installs the pinned requirements for the Lambda platform from the local wheelhouse.
    """

    def __init__(
        self,
        *,
        architecture: Architecture,
        source_dir: Path = LAMBDA_DIR,
        constraints: Path = CONSTRAINTS,
        wheelhouse: Path = WHEELHOUSE,
        docker_fallback: bool = False,
    ) -> None:
        self.architecture: Architecture = architecture
        self.source_dir = source_dir
        self.constraints = constraints
        self.wheelhouse = wheelhouse_dir(architecture, wheelhouse)
        self.docker_fallback = docker_fallback

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        """Bundle into ``output_dir``. Without a wheelhouse, decline (CDK then runs the Docker
        command, which needs Docker and the network) only if ``docker_fallback``; otherwise
        raise :class:`BundlingError` saying to run ``make setup``."""
        if self.docker_fallback and not self.has_wheelhouse():
            return False
        self.bundle(Path(output_dir))
        return True

    def has_wheelhouse(self) -> bool:
        return any(self.wheelhouse.glob("*.whl"))

    def bundle(self, output_dir: Path) -> None:
        if not self.has_wheelhouse():
            raise BundlingError(
                f"no wheels in {self.wheelhouse} to bundle the gateway function for "
                f"{self.architecture}; fix: run `make setup` once (it downloads them)"
            )
        self._copy_sources(output_dir)
        self._install_requirements(output_dir)

    def _copy_sources(self, output_dir: Path) -> None:
        run_sh = output_dir / "run.sh"
        shutil.copyfile(self.source_dir / "run.sh", run_sh)
        # Lambda executes the handler script directly: it must be executable in the zip.
        run_sh.chmod(run_sh.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        package = self.source_dir / "llm_gateway"
        for source in sorted(package.rglob("*")):
            relative = source.relative_to(self.source_dir)
            if (
                not source.is_file()
                or source.suffix not in PACKAGE_FILE_SUFFIXES
                or "__pycache__" in relative.parts
            ):
                continue
            target = output_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    def _install_requirements(self, output_dir: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            *_install_args(
                self.architecture,
                str(output_dir),
                str(self.source_dir / "requirements.txt"),
                str(self.constraints),
            ),
            # --isolated ignores pip.conf and PIP_* variables (e.g. an extra index).
            "--isolated",
            "--no-index",
            "--find-links",
            str(self.wheelhouse),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BundlingError(
                f"pip could not install lambda/requirements.txt from {self.wheelhouse}:\n"
                f"{result.stderr.strip()}\nfix: run `make setup` again (the wheelhouse is "
                "refreshed when the pins change)"
            )
        # Console scripts point at this machine's interpreter: useless in Lambda.
        shutil.rmtree(output_dir / "bin", ignore_errors=True)


def _docker_command(architecture: Architecture) -> list[str]:
    """The same bundle inside the SAM build image, for machines that do have Docker."""
    install = " ".join(
        _install_args(
            architecture,
            "/asset-output",
            "/asset-input/requirements.txt",
            "/tmp/constraints.txt",
        )
    )
    script = (
        'printf "%s\\n" "$LLM_GATEWAY_CONSTRAINTS" > /tmp/constraints.txt'
        f" && pip {install} && rm -rf /asset-output/bin"
        " && cp run.sh /asset-output/ && chmod 755 /asset-output/run.sh"
        " && cp -r llm_gateway /asset-output/"
        " && find /asset-output/llm_gateway -type f ! -name '*.py' ! -name '*.typed' -delete"
        " && find /asset-output/llm_gateway -type d -empty -delete"
    )
    return ["bash", "-c", script]


def gateway_code(
    architecture: Architecture,
    *,
    source_dir: Path = LAMBDA_DIR,
    constraints: Path = CONSTRAINTS,
    wheelhouse: Path = WHEELHOUSE,
    docker_fallback: bool = False,
) -> lambda_.Code:
    """The gateway function's code asset, bundled locally for ``architecture``.

    With ``docker_fallback`` a machine without the wheelhouse builds the same bundle in the
    SAM build image instead (Docker and network needed); by default synth stays offline and
    fails with a message to run ``make setup``.

    The asset hash is the source fingerprint plus the bundling options (which carry the
    architecture and the pins from ``constraints.txt``), so it changes only when the code or
    the pins do, and never with the machine or the time of the build.
    """
    return lambda_.Code.from_asset(
        str(source_dir),
        asset_hash_type=AssetHashType.SOURCE,
        exclude=ASSET_EXCLUDE,
        bundling=BundlingOptions(
            image=RUNTIME.bundling_image,
            platform=_DOCKER_PLATFORM[architecture],
            command=_docker_command(architecture),
            environment={"LLM_GATEWAY_CONSTRAINTS": constraints.read_text("utf-8").strip()},
            # jsii's generated protocol spells the options struct as keyword arguments, but
            # the runtime passes it positionally, as try_bundle declares it.
            local=GatewayLocalBundler(  # type: ignore[arg-type]
                architecture=architecture,
                source_dir=source_dir,
                constraints=constraints,
                wheelhouse=wheelhouse,
                docker_fallback=docker_fallback,
            ),
        ),
    )
