"""The gateway function's offline bundle: built for real from the wheelhouse `make setup` fills."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from aws_cdk import BundlingOptions, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from llm_serving.bundling import (
    RUNTIME,
    BundlingError,
    GatewayLocalBundler,
    gateway_code,
    runtime_dir,
)
from tests.conftest import ROOT, make_app

RUNTIME_DIR = runtime_dir()

MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_local_bundle_has_the_app_and_its_platform_wheels(
    tmp_path: Path, architecture: str, record_property: Callable[[str, object], None]
) -> None:
    GatewayLocalBundler(architecture=architecture).bundle(tmp_path)  # type: ignore[arg-type]

    run_sh = tmp_path / "run.sh"
    assert run_sh.read_bytes() == (RUNTIME_DIR / "run.sh").read_bytes()
    assert os.access(run_sh, os.X_OK)
    package = tmp_path / "llm_gateway"
    assert (package / "__init__.py").is_file()
    assert (package / "contract.py").is_file()
    shipped = {p.relative_to(package) for p in package.rglob("*") if p.is_file()}
    expected = {
        p.relative_to(RUNTIME_DIR)
        for p in RUNTIME_DIR.rglob("*")
        if p.is_file() and p.suffix in (".py", ".typed") and "__pycache__" not in p.parts
    }
    assert shipped == expected
    assert not (package / "run.sh").exists(), "the handler lives at the root only"
    assert not (package / "requirements.txt").exists()
    assert not list(tmp_path.rglob("__pycache__"))
    assert not list(tmp_path.rglob("*.pyc"))

    for name in ("starlette", "uvicorn", "pydantic", "pydantic_core", "anyio", "h11"):
        assert (tmp_path / name / "__init__.py").is_file(), name
    (native,) = (tmp_path / "pydantic_core").glob("*.so")
    assert native.name.endswith(f".cpython-313-{MACHINE[architecture]}-linux-gnu.so")
    # The Lambda runtime provides these; bundling them would only add ~25 MB.
    for absent in ("boto3", "botocore", "s3transfer", "bin"):
        assert not (tmp_path / absent).exists(), absent

    size = _tree_bytes(tmp_path)
    record_property(f"bundle_bytes_{architecture}", size)
    print(f"gateway bundle ({architecture}, unzipped): {size} bytes")
    assert size < 20 * 1024 * 1024, f"bundle grew to {size / 2**20:.1f} MiB"


def test_missing_wheelhouse_says_to_run_make_setup(tmp_path: Path) -> None:
    bundler = GatewayLocalBundler(architecture="arm64", wheelhouse=tmp_path / "nowhere")
    with pytest.raises(BundlingError, match=r"run `make setup`"):
        bundler.bundle(tmp_path / "out")


def _asset_hash(
    architecture: str = "arm64",
    *,
    bundling: bool = False,
    source_dir: Path = RUNTIME_DIR,
    outdir: Path | None = None,
) -> str:
    app = make_app(bundling=bundling, outdir=outdir)
    stack = Stack(app, "Code", env={"region": "us-east-1"})
    lambda_.Function(
        stack,
        "Function",
        runtime=RUNTIME,
        handler="run.sh",
        code=gateway_code(architecture, source_dir=source_dir),  # type: ignore[arg-type]
    )
    if outdir is not None:
        app.synth()
    (function,) = Template.from_stack(stack).find_resources("AWS::Lambda::Function").values()
    key: str = function["Properties"]["Code"]["S3Key"]
    return key.removesuffix(".zip")


def test_synth_bundles_into_the_assembly_with_the_unbundled_hash(tmp_path: Path) -> None:
    """`make synth` bundles; unit tests skip it. Both must name the same asset, or `cdk diff`
    would differ between them."""
    bundled = _asset_hash(bundling=True, outdir=tmp_path)
    assert bundled == _asset_hash(bundling=False)
    asset = tmp_path / f"asset.{bundled}"
    assert os.access(asset / "run.sh", os.X_OK)
    assert (asset / "llm_gateway" / "main.py").is_file()
    assert list((asset / "pydantic_core").glob("*aarch64-linux-gnu.so"))
    manifest = json.loads((tmp_path / "Code.assets.json").read_text())
    (entry,) = (f for f in manifest["files"].values() if f["source"]["path"] == asset.name)
    assert entry["source"]["packaging"] == "zip"


def test_asset_hash_follows_sources_and_architecture_not_caches(tmp_path: Path) -> None:
    source = tmp_path / "llm_gateway"
    shutil.copytree(RUNTIME_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    base = _asset_hash(source_dir=source)

    cache = source / "__pycache__"
    cache.mkdir()
    (cache / "routes.cpython-311.pyc").write_bytes(b"\0stale")
    assert _asset_hash(source_dir=source) == base, "caches must not change the asset"

    assert _asset_hash("x86_64", source_dir=source) != base, "each architecture is its own asset"

    requirements = source / "requirements.txt"
    requirements.write_text(requirements.read_text() + "# changed\n")
    with_requirements = _asset_hash(source_dir=source)
    assert with_requirements != base, "the runtime's pins are part of the asset"

    routes = source / "contract.py"
    routes.write_text(routes.read_text() + "\n# changed\n")
    assert _asset_hash(source_dir=source) not in (base, with_requirements)


def test_runtime_is_the_imported_package_with_its_files() -> None:
    """The bundler ships the llm_gateway Python imports (in this checkout: an editable install of
    lambda/), never a path relative to the library's own files."""
    spec = importlib.util.find_spec("llm_gateway")
    assert spec is not None
    assert spec.origin is not None
    assert RUNTIME_DIR == Path(spec.origin).parent == ROOT / "lambda" / "llm_gateway"
    assert os.access(RUNTIME_DIR / "run.sh", os.X_OK)
    assert (RUNTIME_DIR / "requirements.txt").is_file()


def test_bundler_reads_wheelhouse_and_constraints_from_the_app_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults are the app's files in the current directory (where `cdk synth` runs the app);
    an app without constraints.txt still bundles from its wheelhouse."""
    monkeypatch.chdir(tmp_path)
    bundler = GatewayLocalBundler(architecture="arm64")
    assert bundler.wheelhouse == tmp_path / ".wheelhouse" / "aarch64"
    assert bundler.constraints is None
    assert bundler.source_dir == RUNTIME_DIR
    with pytest.raises(BundlingError, match=r"pip download -r .*requirements\.txt"):
        bundler.bundle(tmp_path / "out")

    (tmp_path / ".wheelhouse").symlink_to(ROOT / ".wheelhouse")
    (tmp_path / "out").mkdir()  # CDK creates the output directory
    GatewayLocalBundler(architecture="arm64").bundle(tmp_path / "out")
    assert (tmp_path / "out" / "llm_gateway" / "main.py").is_file()
    assert list((tmp_path / "out" / "pydantic_core").glob("*aarch64-linux-gnu.so"))

    (tmp_path / "constraints.txt").write_text("anyio==4.16.0\n")
    assert GatewayLocalBundler(architecture="arm64").constraints == tmp_path / "constraints.txt"


def test_docker_fallback_is_opt_in(tmp_path: Path) -> None:
    """Declining hands the build to CDK's Docker command; only on request."""
    options = BundlingOptions(image=RUNTIME.bundling_image)
    bundler = GatewayLocalBundler(
        architecture="arm64", wheelhouse=tmp_path / "nowhere", docker_fallback=True
    )
    assert bundler.try_bundle(str(tmp_path), options) is False
    with pytest.raises(BundlingError):
        GatewayLocalBundler(architecture="arm64", wheelhouse=tmp_path / "nowhere").try_bundle(
            str(tmp_path), options
        )
