"""Bundle the gateway's Lambda code without Docker and without the network.

The code is the ``llm_gateway`` runtime package, found where Python imports it from (the
installed distribution, or the source tree in an editable install): its modules, ``run.sh``
(the handler, placed at the asset root) and ``requirements.txt``, which ship with it as package
data. Its dependencies (``requirements.txt``, with the app's ``constraints.txt`` when there is
one) are installed for the Lambda platform from a local wheelhouse (``.wheelhouse/``, which
``make setup`` fills), so ``cdk synth`` stays offline. boto3/botocore are not bundled: the Lambda
runtime ships them.

``constraints.txt`` and ``.wheelhouse/`` are the CDK app's: by default they are looked up in
the current directory, where ``cdk synth`` runs the app (the directory of ``cdk.json``), as CDK
resolves relative asset paths.
"""

from __future__ import annotations

import importlib.util
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
RUNTIME_PACKAGE = "llm_gateway"
HANDLER = "run.sh"
REQUIREMENTS = "requirements.txt"
CONSTRAINTS = Path("constraints.txt")
"""The app's full pin set, relative to the current directory; optional."""
WHEELHOUSE = Path(".wheelhouse")
"""The app's Lambda-platform wheels (one directory per machine), relative to the current
directory."""

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


def runtime_dir() -> Path:
    """The directory of the installed ``llm_gateway`` package (found without importing it), with
    ``run.sh`` and ``requirements.txt`` beside its modules."""
    spec = importlib.util.find_spec(RUNTIME_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise BundlingError(
            f"the gateway runtime package {RUNTIME_PACKAGE!r} is not importable; fix: install "
            "llm-serving-cdk (it ships the runtime), or `make setup` in its repository"
        )
    directory = Path(locations[0])
    missing = [name for name in (HANDLER, REQUIREMENTS) if not (directory / name).is_file()]
    if missing:
        raise BundlingError(
            f"{directory}: the gateway runtime package lacks {', '.join(missing)}; fix: "
            "reinstall llm-serving-cdk (they ship with it as package data)"
        )
    return directory


def default_constraints() -> Path | None:
    """``constraints.txt`` in the current directory, if there is one."""
    path = CONSTRAINTS.absolute()
    return path if path.is_file() else None


def pip_platform(architecture: Architecture) -> str:
    """pip's ``--platform`` tag for a Lambda architecture."""
    return f"manylinux2014_{_MACHINE[architecture]}"


def wheelhouse_dir(architecture: Architecture, wheelhouse: Path = WHEELHOUSE) -> Path:
    """Where ``make setup`` downloads the wheels for ``architecture``."""
    return wheelhouse.absolute() / _MACHINE[architecture]


def _download_hint(architecture: Architecture, wheelhouse: Path, requirements: Path) -> str:
    """The command that fills ``wheelhouse`` outside this repository (``make setup`` inside)."""
    return (
        f"pip download -r {requirements} --platform {pip_platform(architecture)} "
        f"--implementation cp --python-version {PYTHON_VERSION} --only-binary=:all: "
        f"-d {wheelhouse} (add -c constraints.txt if the app has one)"
    )


def _install_args(
    architecture: Architecture, target: str, requirements: str, constraints: str | None
) -> list[str]:
    return [
        "install",
        "--requirement",
        requirements,
        *(["--constraint", constraints] if constraints is not None else []),
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

    Copies ``run.sh`` (executable) to the bundle's root and the ``llm_gateway`` package (source
    files only) beside it, and installs the pinned requirements for the Lambda platform from the
    local wheelhouse. ``source_dir`` is the runtime package's directory (default: the installed
    one, :func:`runtime_dir`); ``constraints`` defaults to :func:`default_constraints`.
    """

    def __init__(
        self,
        *,
        architecture: Architecture,
        source_dir: Path | None = None,
        constraints: Path | None = None,
        wheelhouse: Path = WHEELHOUSE,
        docker_fallback: bool = False,
    ) -> None:
        self.architecture: Architecture = architecture
        self.source_dir = source_dir if source_dir is not None else runtime_dir()
        self.constraints = constraints if constraints is not None else default_constraints()
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
            hint = _download_hint(
                self.architecture, self.wheelhouse, self.source_dir / REQUIREMENTS
            )
            raise BundlingError(
                f"no wheels in {self.wheelhouse} to bundle the gateway function for "
                f"{self.architecture}; fix: run `make setup` once (it downloads them), or in "
                f"your own app: {hint}"
            )
        self._copy_sources(output_dir)
        self._install_requirements(output_dir)

    def _copy_sources(self, output_dir: Path) -> None:
        run_sh = output_dir / HANDLER
        shutil.copyfile(self.source_dir / HANDLER, run_sh)
        # Lambda executes the handler script directly: it must be executable in the zip.
        run_sh.chmod(run_sh.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        for source in sorted(self.source_dir.rglob("*")):
            relative = source.relative_to(self.source_dir)
            if (
                not source.is_file()
                or source.suffix not in PACKAGE_FILE_SUFFIXES
                or "__pycache__" in relative.parts
            ):
                continue
            target = output_dir / RUNTIME_PACKAGE / relative
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
                str(self.source_dir / REQUIREMENTS),
                str(self.constraints) if self.constraints is not None else None,
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
                f"pip could not install {self.source_dir / REQUIREMENTS} from "
                f"{self.wheelhouse}:\n"
                f"{result.stderr.strip()}\nfix: run `make setup` again (the wheelhouse is "
                "refreshed when the pins change)"
            )
        # Console scripts point at this machine's interpreter: useless in Lambda.
        shutil.rmtree(output_dir / "bin", ignore_errors=True)


def _docker_command(architecture: Architecture) -> list[str]:
    """The same bundle inside the SAM build image, for machines that do have Docker
    (``/asset-input`` is the runtime package's directory)."""
    install = " ".join(
        _install_args(
            architecture,
            "/asset-output",
            f"/asset-input/{REQUIREMENTS}",
            "/tmp/constraints.txt",
        )
    )
    package = f"/asset-output/{RUNTIME_PACKAGE}"
    script = (
        'printf "%s\\n" "$LLM_GATEWAY_CONSTRAINTS" > /tmp/constraints.txt'
        f" && pip {install} && rm -rf /asset-output/bin"
        f" && cp /asset-input/{HANDLER} /asset-output/ && chmod 755 /asset-output/{HANDLER}"
        f" && cp -r /asset-input {package}"
        f" && find {package} -type f ! -name '*.py' ! -name '*.typed' -delete"
        f" && find {package} -type d -empty -delete"
    )
    return ["bash", "-c", script]


def gateway_code(
    architecture: Architecture,
    *,
    source_dir: Path | None = None,
    constraints: Path | None = None,
    wheelhouse: Path = WHEELHOUSE,
    docker_fallback: bool = False,
) -> lambda_.Code:
    """The gateway function's code asset, bundled locally for ``architecture``: ``run.sh`` at
    the root (the handler) and the ``llm_gateway`` package beside it.

    ``source_dir`` is the runtime package's directory (default: the installed one,
    :func:`runtime_dir`); ``constraints`` and ``wheelhouse`` are the app's (default:
    ``constraints.txt``, if present, and ``.wheelhouse/`` in the current directory).

    With ``docker_fallback`` a machine without the wheelhouse builds the same bundle in the
    SAM build image instead (Docker and network needed); by default synth stays offline and
    fails with a message to run ``make setup``.

    The asset hash is the source fingerprint plus the bundling options (which carry the
    architecture and the pins from ``constraints.txt``), so it changes only when the code or
    the pins do, and never with the machine or the time of the build.
    """
    source = source_dir if source_dir is not None else runtime_dir()
    pins = constraints if constraints is not None else default_constraints()
    return lambda_.Code.from_asset(
        str(source),
        asset_hash_type=AssetHashType.SOURCE,
        exclude=ASSET_EXCLUDE,
        bundling=BundlingOptions(
            image=RUNTIME.bundling_image,
            platform=_DOCKER_PLATFORM[architecture],
            command=_docker_command(architecture),
            environment={
                "LLM_GATEWAY_CONSTRAINTS": pins.read_text("utf-8").strip() if pins else ""
            },
            # jsii's generated protocol spells the options struct as keyword arguments, but
            # the runtime passes it positionally, as try_bundle declares it.
            local=GatewayLocalBundler(  # type: ignore[arg-type]
                architecture=architecture,
                source_dir=source,
                constraints=pins,
                wheelhouse=wheelhouse,
                docker_fallback=docker_fallback,
            ),
        ),
    )
